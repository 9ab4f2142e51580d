// kvq: compressed K/V caches and attention on them. The one header to include.
#pragma once

#include <kvq/version.hpp>

#include <kvq/core/aligned_buffer.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <kvq/codec/codec.hpp>
#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/cache/snapshot.hpp>
#include <kvq/cache/cache_pool.hpp>

// SIMD kernels (Highway dynamic dispatch); must precede any other Highway include.
#include <kvq/kernels/dispatch.hpp>
#include <kvq/kernels/parallel.hpp>
