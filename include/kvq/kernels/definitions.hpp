// Compiles kvq's SIMD kernels for every Highway target and defines the entry
// points (entry_points.hpp) as run-time dispatch to the best target for the
// running CPU.
//
// Header-only mode: dispatch.hpp includes this; nothing to do.
// KVQ_EXTERN_KERNELS mode: include this in exactly one .cpp of the program
// (with KVQ_EXTERN_KERNELS defined there too), or link kvq::kernels, whose
// one source file is just that include:
//     #define KVQ_EXTERN_KERNELS   // or -DKVQ_EXTERN_KERNELS for every TU
//     #include <kvq/kernels/definitions.hpp>
//
// A translation unit may contain only one hwy/foreach_target.h, and
// hwy/highway.h must not come before it: include this before any Highway
// header; a TU that already uses foreach_target.h for its own kernels cannot
// also compile kvq's (put them in another TU, or use KVQ_EXTERN_KERNELS).
//
// Configuration macros (for the TU that compiles the kernels):
//   KVQ_STATIC_DISPATCH_ONLY  compile only the target of the compiler flags
//                             (HWY_COMPILE_ONLY_STATIC): faster to build, no
//                             run-time choice. On x86 it needs -march=
//                             x86-64-v2 or better: the baseline's static
//                             target is SCALAR/EMU128, which stops the build
//                             unless KVQ_ALLOW_SCALAR_KERNELS is defined too.
//   HWY_WANT_AVX3_DL          also compile Highway 1.0.3's AVX3_DL target
//                             (Ice Lake / Zen 4+). Defined automatically when
//                             the compiler flags already imply it
//                             (-march=native on such a CPU), because 1.0.3
//                             otherwise fails with "Logic error: best baseline
//                             should be included in dynamic targets".
// The program links hwy::hwy (hwy::SupportedTargets lives in libhwy).
//
// kvq::kernels itself compiles the kernels one family per TU so that a
// parallel build runs them side by side (src/kernels_*.cpp set
// KVQ_KERNEL_FAMILY to a KVQ_FAMILY_* value of entry_points.hpp; such a TU
// defines that family's entry points only, and src/compiled_parts.cpp the
// rest). Left unset, as in a program's own one TU, this defines everything.
#pragma once

#if defined(HWY_HIGHWAY_INCLUDED) || defined(HIGHWAY_HWY_FOREACH_TARGET_H_)
#error "kvq: include <kvq/kvq.hpp> (or kvq/kernels/definitions.hpp) before any Highway header, or build with KVQ_EXTERN_KERNELS"
#endif

// Extern mode: this TU also defines kvq's other out-of-line parts
// (core/compiled.hpp), which must therefore not have been included yet.
#if defined(KVQ_EXTERN_KERNELS) && (defined(KVQ_CODEC_REGISTRY_INCLUDED) || defined(KVQ_CACHE_SPEC_INCLUDED)) && !defined(KVQ_DEFINE_COMPILED_PARTS)
#error "kvq: with KVQ_EXTERN_KERNELS, include <kvq/kernels/definitions.hpp> first in its translation unit"
#endif
#define KVQ_DEFINE_COMPILED_PARTS

#include <kvq/core/compiled.hpp>
#include <kvq/kernels/entry_points.hpp>

// The entry points this TU defines. Every family's TU parses every kernel
// (all-inl.h): the entry points are inline functions, so only the exported
// ones generate code.
#if !defined(KVQ_KERNEL_FAMILY)
#define KVQ_COMPILED_ENTRY_POINTS KVQ_KERNEL_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_EXACT
#define KVQ_COMPILED_ENTRY_POINTS KVQ_EXACT_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_UNIFORM_SCORES
#define KVQ_COMPILED_ENTRY_POINTS KVQ_UNIFORM_SCORES_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_UNIFORM_ACCUMULATE
#define KVQ_COMPILED_ENTRY_POINTS KVQ_UNIFORM_ACCUMULATE_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_INT8_QUERY
#define KVQ_COMPILED_ENTRY_POINTS KVQ_INT8_QUERY_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_TURBO
#define KVQ_COMPILED_ENTRY_POINTS KVQ_TURBO_ENTRY_POINTS
#elif KVQ_KERNEL_FAMILY == KVQ_FAMILY_PER_CHANNEL
#define KVQ_COMPILED_ENTRY_POINTS KVQ_PER_CHANNEL_ENTRY_POINTS
#else
#error "kvq: KVQ_KERNEL_FAMILY must be one of the KVQ_FAMILY_* values of kvq/kernels/entry_points.hpp"
#endif

#if defined(KVQ_STATIC_DISPATCH_ONLY) && !defined(HWY_COMPILE_ONLY_STATIC)
#define HWY_COMPILE_ONLY_STATIC
#endif

// AArch64: NEON only. The kernels keep register tiles in arrays of vectors
// (VF x[kBlock / kLanes], acc[rows][queries]), and SVE vectors are sizeless
// types that cannot be array elements, so none of Highway's SVE targets (SVE,
// SVE2, SVE_256, SVE2_128) compiles. Every SVE CPU also implements NEON, which
// the dispatcher then picks. Bits as in hwy/detect_targets.h (1.0.3), which
// must not be included before HWY_DISABLED_TARGETS is set.
#if defined(__aarch64__) && !defined(HWY_DISABLED_TARGETS)
#define HWY_DISABLED_TARGETS ((1LL << 24) | (1LL << 25) | (1LL << 26) | (1LL << 27))
#endif
#include <hwy/detect_targets.h>
// A user's own HWY_DISABLED_TARGETS must keep the SVE targets out as well.
#if HWY_ARCH_ARM_A64 && (HWY_TARGETS & (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128))
#error "kvq: the kernels cannot be compiled for SVE targets (arrays of sizeless vectors); HWY_DISABLED_TARGETS must include HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128"
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kvq/kernels/all-inl.h"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include <kvq/kernels/all-inl.h>  // the static target's copy

// Static dispatch on an x86 baseline without -march compiles Highway's
// SCALAR/EMU128 kernels only: attention ~10x slower, silently. Refuse unless
// asked for (the project's own sanitizer, fuzz and test builds do ask).
#if defined(HWY_COMPILE_ONLY_STATIC) && HWY_ARCH_X86 && \
    (HWY_STATIC_TARGET == HWY_SCALAR || HWY_STATIC_TARGET == HWY_EMU128) && !defined(KVQ_ALLOW_SCALAR_KERNELS)
#error "kvq: KVQ_STATIC_DISPATCH_ONLY with these compiler flags compiles only scalar kernels (about 10x slower attention). Add -march=x86-64-v2 (SSE4), -march=x86-64-v3 (AVX2), -march=x86-64-v4 (AVX-512) or -march=native, drop KVQ_STATIC_DISPATCH_ONLY (run-time dispatch), or define KVQ_ALLOW_SCALAR_KERNELS to accept scalar kernels."
#endif

#if HWY_ONCE

namespace kvq::kernels {

// Dispatch tables. Each TU owns its tables (anonymous namespace): a table
// lists exactly the targets that TU compiled, so it can never be paired with
// another TU's target list.
namespace {
#define KVQ_EXPORT_ENTRY_POINT(TYPE, NAME) HWY_EXPORT(NAME);
KVQ_COMPILED_ENTRY_POINTS(KVQ_EXPORT_ENTRY_POINT)
#undef KVQ_EXPORT_ENTRY_POINT
}  // namespace

inline namespace KVQ_KERNELS_ABI {
namespace entry {

// One definition per parameter list of entry_points.hpp; each forwards to the
// target Highway chose (re-read per call: tests force targets at run time).
#define KVQ_DEFINE_TargetNameKernel(NAME) \
  KVQ_COMPILED_INLINE const char* NAME() { return HWY_DYNAMIC_DISPATCH(NAME)(); }
#define KVQ_DEFINE_TargetMaskKernel(NAME) \
  KVQ_COMPILED_INLINE std::int64_t NAME() { return HWY_DYNAMIC_DISPATCH(NAME)(); }
#define KVQ_DEFINE_RowKernel(NAME)                                                                          \
  KVQ_COMPILED_INLINE void NAME(const float* in, std::size_t n_q, std::size_t in_stride,                \
                                    const std::byte* rows, std::size_t n_rows, std::size_t head_dim,        \
                                    float* out, std::size_t out_stride) {                                   \
    HWY_DYNAMIC_DISPATCH(NAME)(in, n_q, in_stride, rows, n_rows, head_dim, out, out_stride);                \
  }
#define KVQ_DEFINE_TurboKernel(NAME)                                                                        \
  KVQ_COMPILED_INLINE void NAME(const float* levels, const float* in, std::size_t n_q,                  \
                                    std::size_t in_stride, const std::byte* rows, std::size_t n_rows,       \
                                    std::size_t head_dim, float* out, std::size_t out_stride) {             \
    HWY_DYNAMIC_DISPATCH(NAME)(levels, in, n_q, in_stride, rows, n_rows, head_dim, out, out_stride);        \
  }
#define KVQ_DEFINE_PerChannelKernel(NAME)                                                                   \
  KVQ_COMPILED_INLINE void NAME(const float* in, std::size_t n_q, std::size_t in_stride,                \
                                    const std::byte* tiles, std::size_t n_tiles, std::size_t head_dim,      \
                                    std::size_t g, float* scratch, float* out, std::size_t out_stride) {    \
    HWY_DYNAMIC_DISPATCH(NAME)(in, n_q, in_stride, tiles, n_tiles, head_dim, g, scratch, out, out_stride);  \
  }
#define KVQ_DEFINE_SoftmaxKernel(NAME)                                                                      \
  KVQ_COMPILED_INLINE void NAME(float* s, std::size_t n_q, std::size_t stride, std::size_t n,           \
                                    const std::uint32_t* n_valid, float scale, float* m, float* l,          \
                                    float* corr) {                                                          \
    HWY_DYNAMIC_DISPATCH(NAME)(s, n_q, stride, n, n_valid, scale, m, l, corr);                              \
  }
#define KVQ_DEFINE_QuantizeKernel(NAME)                                                                     \
  KVQ_COMPILED_INLINE void NAME(const float* q, std::size_t n_q, std::size_t q_stride, std::size_t head_dim, \
                                std::byte* out) {                                                           \
    HWY_DYNAMIC_DISPATCH(NAME)(q, n_q, q_stride, head_dim, out);                                            \
  }
#define KVQ_DEFINE_Int8ScoresKernel(NAME)                                                                   \
  KVQ_COMPILED_INLINE void NAME(const std::byte* qq, std::size_t n_q, const std::byte* rows,                \
                                std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride) { \
    HWY_DYNAMIC_DISPATCH(NAME)(qq, n_q, rows, n_rows, head_dim, out, out_stride);                           \
  }
#define KVQ_DEFINE_Int8TurboKernel(NAME)                                                                    \
  KVQ_COMPILED_INLINE void NAME(const std::int8_t* levels, float step, const std::byte* qq, std::size_t n_q,  \
                                const std::byte* rows, std::size_t n_rows, std::size_t head_dim, float* out,  \
                                std::size_t out_stride) {                                                     \
    HWY_DYNAMIC_DISPATCH(NAME)(levels, step, qq, n_q, rows, n_rows, head_dim, out, out_stride);               \
  }
#define KVQ_DEFINE_Int8TurboAccumulateKernel(NAME)                                                          \
  KVQ_COMPILED_INLINE void NAME(const float* table, const std::int8_t* levels, float step, const float* w,    \
                                std::size_t n_q, std::size_t w_stride, const std::byte* rows, std::size_t n_rows, \
                                std::size_t head_dim, float* acc, std::size_t acc_stride) {                   \
    HWY_DYNAMIC_DISPATCH(NAME)(table, levels, step, w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride); \
  }
#define KVQ_DEFINE_ENTRY_POINT(TYPE, NAME) KVQ_DEFINE_##TYPE(NAME)
KVQ_COMPILED_ENTRY_POINTS(KVQ_DEFINE_ENTRY_POINT)
#undef KVQ_DEFINE_ENTRY_POINT
#undef KVQ_DEFINE_TargetNameKernel
#undef KVQ_DEFINE_TargetMaskKernel
#undef KVQ_DEFINE_RowKernel
#undef KVQ_DEFINE_TurboKernel
#undef KVQ_DEFINE_PerChannelKernel
#undef KVQ_DEFINE_SoftmaxKernel
#undef KVQ_DEFINE_QuantizeKernel
#undef KVQ_DEFINE_Int8ScoresKernel
#undef KVQ_DEFINE_Int8TurboKernel
#undef KVQ_DEFINE_Int8TurboAccumulateKernel

}  // namespace entry
}  // namespace KVQ_KERNELS_ABI
}  // namespace kvq::kernels

#endif  // HWY_ONCE

// kvq's other out-of-line parts, in extern mode (a family's TU leaves them to
// src/compiled_parts.cpp).
#if !defined(KVQ_KERNEL_FAMILY)
#include <kvq/core/compiled_parts.hpp>
#endif
