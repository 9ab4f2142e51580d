// Every header with out-of-line parts (core/compiled.hpp). In extern mode the
// one TU that defines them includes this with KVQ_DEFINE_COMPILED_PARTS set:
// kernels/definitions.hpp does, or, in kvq::kernels, src/compiled_parts.cpp.
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/codec/registry.hpp>
// Header-only, cache.hpp defines its members inline wherever it is included;
// here (through definitions.hpp) it would come inside dispatch.hpp, which it
// includes.
#if defined(KVQ_EXTERN_KERNELS)
#include <kvq/cache/cache.hpp>
#endif
