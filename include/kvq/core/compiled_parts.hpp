// Every header with out-of-line parts (core/compiled.hpp). In extern mode the
// one TU that defines them includes this with KVQ_DEFINE_COMPILED_PARTS set:
// kernels/definitions.hpp does, or, in kvq::kernels, src/compiled_parts.cpp.
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/codec/registry.hpp>
