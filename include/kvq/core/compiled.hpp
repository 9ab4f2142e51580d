// Where kvq's out-of-line parts are defined. Header-only by default: every
// such function is `inline` and defined wherever it is included. With
// KVQ_EXTERN_KERNELS (entry_points.hpp), a TU sees their declarations only and
// the one TU that includes <kvq/kernels/definitions.hpp> (kvq::kernels)
// defines them: the SIMD kernels and the code every codec instantiates (the
// codec table: constructors, codebooks, rotations), which are most of the
// compile time of a TU that builds a Cache.
//
//   KVQ_COMPILED_DEFINITIONS  1 where the definitions are compiled
//   KVQ_COMPILED_INLINE       the linkage to write on those definitions
#pragma once

#if !defined(KVQ_EXTERN_KERNELS)
#define KVQ_COMPILED_DEFINITIONS 1
#define KVQ_COMPILED_INLINE inline
#elif defined(KVQ_DEFINE_COMPILED_PARTS)  // set by kernels/definitions.hpp
#define KVQ_COMPILED_DEFINITIONS 1
#define KVQ_COMPILED_INLINE
#else
#define KVQ_COMPILED_DEFINITIONS 0
#endif
