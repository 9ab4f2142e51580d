// The one header that compiles kvq's SIMD kernels and picks the best one for
// the running CPU (Highway dynamic dispatch).
//
// A translation unit may contain only one hwy/foreach_target.h, and
// hwy/highway.h must not come before it, so every kernel family is pulled in
// here through all-inl.h; kvq/kvq.hpp includes this header. Include kvq
// before any Highway header; a TU that already uses foreach_target.h for its
// own kernels cannot also include this header (put kvq in another TU).
//
// Configuration macros, to be defined identically in every TU of a program:
//   KVQ_STATIC_DISPATCH_ONLY  compile only the target of the compiler flags
//                             (HWY_COMPILE_ONLY_STATIC): much faster builds,
//                             no run-time choice. On x86 it needs -march=
//                             x86-64-v2 or better: the baseline's static
//                             target is SCALAR/EMU128, which stops the build
//                             unless KVQ_ALLOW_SCALAR_KERNELS is defined too.
//   HWY_WANT_AVX3_DL          also compile Highway 1.0.3's AVX3_DL target
//                             (Ice Lake / Zen 4+). Defined automatically when
//                             the compiler flags already imply it
//                             (-march=native on such a CPU), because 1.0.3
//                             otherwise fails with "Logic error: best baseline
//                             should be included in dynamic targets".
// The wrappers live in an inline namespace named after this configuration, so
// TUs built with different settings link without sharing (and mixing up)
// dispatch tables.
//
// Consumers link hwy::hwy (hwy::SupportedTargets lives in libhwy).
#pragma once

#if defined(HWY_HIGHWAY_INCLUDED) || defined(HIGHWAY_HWY_FOREACH_TARGET_H_)
#error "kvq: include <kvq/kvq.hpp> (or kvq/kernels/dispatch.hpp) before any Highway header"
#endif

#include <kvq/cache/exact_codec.hpp>
#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/scratch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

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

// Mirrors the AVX3_DL baseline test of hwy/detect_targets.h (1.0.3).
#if !defined(HWY_WANT_AVX3_DL) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVXVNNI__) && defined(__VAES__) && defined(__VPCLMULQDQ__) &&       \
    defined(__AVX512VBMI__) && defined(__AVX512VBMI2__) && defined(__AVX512VPOPCNTDQ__) &&                 \
    defined(__AVX512BITALG__)
#define HWY_WANT_AVX3_DL
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

#if defined(HWY_COMPILE_ONLY_STATIC)
#define KVQ_KERNELS_ABI abi_static
#elif defined(HWY_WANT_AVX3_DL)
#define KVQ_KERNELS_ABI abi_dynamic_dl
#else
#define KVQ_KERNELS_ABI abi_dynamic
#endif

namespace kvq::kernels {

// Dispatch tables. Each TU owns its tables (anonymous namespace): a table
// lists exactly the targets that TU compiled, so it can never be paired with
// another TU's target list.
namespace {
HWY_EXPORT(KernelTargetName);
HWY_EXPORT(ScoresQ8_0);
HWY_EXPORT(ScoresQ4_0);
HWY_EXPORT(ScoresQ4_1);
HWY_EXPORT(ScoresQ3_1);
HWY_EXPORT(ScoresQ2_1);
HWY_EXPORT(AccumulateQ8_0);
HWY_EXPORT(AccumulateQ4_0);
HWY_EXPORT(AccumulateQ4_1);
HWY_EXPORT(AccumulateQ3_1);
HWY_EXPORT(AccumulateQ2_1);
HWY_EXPORT(ScoresTurbo2);
HWY_EXPORT(ScoresTurbo3);
HWY_EXPORT(ScoresTurbo4);
HWY_EXPORT(AccumulateTurbo2);
HWY_EXPORT(AccumulateTurbo3);
HWY_EXPORT(AccumulateTurbo4);
HWY_EXPORT(ScoresPc2);
HWY_EXPORT(ScoresPc3);
HWY_EXPORT(ScoresPc4);
HWY_EXPORT(AccumulatePc2);
HWY_EXPORT(AccumulatePc3);
HWY_EXPORT(AccumulatePc4);
HWY_EXPORT(ScoresF32);
HWY_EXPORT(ScoresF16);
HWY_EXPORT(AccumulateF32);
HWY_EXPORT(AccumulateF16);
HWY_EXPORT(OnlineSoftmax);
}  // namespace

inline namespace KVQ_KERNELS_ABI {

namespace detail {
// Cheap checks done once per call (not per row): they catch transposed
// arguments, which would otherwise read or write out of bounds.
inline void check_run(const char* what, std::size_t vec_min_stride, const void* vecs, std::size_t n_q,
                      std::size_t vec_stride, const void* rows, std::size_t n_rows, const void* out,
                      std::size_t out_stride, std::size_t out_min_stride) {
  if (n_q == 0 || n_rows == 0) return;
  if (!vecs || !rows || !out)
    kvq::detail::fail(Errc::invalid_argument, std::string(what) + ": null pointer with a non-empty run");
  if (n_q > 1 && vec_stride < vec_min_stride)
    kvq::detail::fail(Errc::shape_mismatch, std::string(what) + ": input stride " + std::to_string(vec_stride) +
                                                " is below " + std::to_string(vec_min_stride));
  if (n_q > 1 && out_stride < out_min_stride)
    kvq::detail::fail(Errc::shape_mismatch, std::string(what) + ": output stride " + std::to_string(out_stride) +
                                                " is below " + std::to_string(out_min_stride));
}
}  // namespace detail

// Name of the SIMD target the kernels run on ("AVX3", "AVX2", "SSE4", "EMU128", ...).
inline const char* target_name() { return HWY_DYNAMIC_DISPATCH(KernelTargetName)(); }

// Every kernel works in the codec's *working space* (codec.hpp): queries are
// codec.prepare_query(q) and accumulators are mapped back with
// codec.finish_output. For the uniform family both are the identity (model
// space); for turbo they are the rotation and its inverse, so the kernels
// never rotate a key or value.
//
// scores: out[qi * out_stride + t] = q_qi . decode(row_t) for the n_q queries
// q + qi * q_stride (a GQA group: all query heads sharing this KV head) and
// the n_rows compressed rows starting at `rows` (codec.bytes_per_tile() each).
// Each row is read once for the whole group. Pointers need no alignment.
//
// accumulate: acc_qi[j] += sum_t w[qi * w_stride + t] * decode(row_t)[j] for
// the n_q accumulators acc + qi * acc_stride (head_dim floats each).
#define KVQ_KERNELS_UNIFORM_WRAPPERS(CODEC, FMT)                                                          \
  inline void scores(const CODEC& codec, const float* q, std::size_t n_q, std::size_t q_stride,             \
                     const std::byte* rows, std::size_t n_rows, float* out, std::size_t out_stride) {      \
    detail::check_run("kvq::kernels::scores", codec.head_dim(), q, n_q, q_stride, rows, n_rows, out,       \
                      out_stride, n_rows);                                                                 \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    HWY_DYNAMIC_DISPATCH(Scores##FMT)(q, n_q, q_stride, rows, n_rows, codec.head_dim(), out, out_stride); \
  }                                                                                                        \
  inline void accumulate(const CODEC& codec, const float* w, std::size_t n_q, std::size_t w_stride,         \
                         const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {  \
    detail::check_run("kvq::kernels::accumulate", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride, \
                      codec.head_dim());                                                                   \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    HWY_DYNAMIC_DISPATCH(Accumulate##FMT)(w, n_q, w_stride, rows, n_rows, codec.head_dim(), acc,          \
                                          acc_stride);                                                     \
  }
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q8_0, Q8_0)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q4_0, Q4_0)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q4_1, Q4_1)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q3_1, Q3_1)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q2_1, Q2_1)
#undef KVQ_KERNELS_UNIFORM_WRAPPERS

namespace detail {
// The codebook as the kernels read it: 2^B levels, zero-padded to 16 floats
// (one AVX-512 register).
template <unsigned B>
struct PaddedCodebook {
  alignas(64) float levels[16] = {};
  explicit PaddedCodebook(const Turbo<B>& codec) {
    std::copy(codec.levels().begin(), codec.levels().end(), levels);
  }
};
using TurboKernel = void (*)(const float*, const float*, std::size_t, std::size_t, const std::byte*,
                             std::size_t, std::size_t, float*, std::size_t);
template <unsigned B>
TurboKernel turbo_scores_kernel() {
  if constexpr (B == 2) return HWY_DYNAMIC_DISPATCH(ScoresTurbo2);
  if constexpr (B == 3) return HWY_DYNAMIC_DISPATCH(ScoresTurbo3);
  if constexpr (B == 4) return HWY_DYNAMIC_DISPATCH(ScoresTurbo4);
}
template <unsigned B>
TurboKernel turbo_accumulate_kernel() {
  if constexpr (B == 2) return HWY_DYNAMIC_DISPATCH(AccumulateTurbo2);
  if constexpr (B == 3) return HWY_DYNAMIC_DISPATCH(AccumulateTurbo3);
  if constexpr (B == 4) return HWY_DYNAMIC_DISPATCH(AccumulateTurbo4);
}
}  // namespace detail

// Turbo rows (turbo2/3/4): q and acc in the rotated space of `codec`.
template <unsigned B>
  requires(B >= 2 && B <= 4)
void scores(const Turbo<B>& codec, const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* rows,
            std::size_t n_rows, float* out, std::size_t out_stride) {
  detail::check_run("kvq::kernels::scores", codec.head_dim(), q, n_q, q_stride, rows, n_rows, out, out_stride,
                    n_rows);
  if (n_q == 0 || n_rows == 0) return;
  const detail::PaddedCodebook<B> table(codec);
  detail::turbo_scores_kernel<B>()(table.levels, q, n_q, q_stride, rows, n_rows, codec.head_dim(), out,
                                   out_stride);
}
template <unsigned B>
  requires(B >= 2 && B <= 4)
void accumulate(const Turbo<B>& codec, const float* w, std::size_t n_q, std::size_t w_stride,
                const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {
  detail::check_run("kvq::kernels::accumulate", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride,
                    codec.head_dim());
  if (n_q == 0 || n_rows == 0) return;
  const detail::PaddedCodebook<B> table(codec);
  detail::turbo_accumulate_kernel<B>()(table.levels, w, n_q, w_stride, rows, n_rows, codec.head_dim(), acc,
                                       acc_stride);
}

namespace detail {
using PerChannelKernel = void (*)(const float*, std::size_t, std::size_t, const std::byte*, std::size_t,
                                  std::size_t, std::size_t, float*, float*, std::size_t);
template <unsigned B>
PerChannelKernel per_channel_scores_kernel() {
  if constexpr (B == 2) return HWY_DYNAMIC_DISPATCH(ScoresPc2);
  if constexpr (B == 3) return HWY_DYNAMIC_DISPATCH(ScoresPc3);
  if constexpr (B == 4) return HWY_DYNAMIC_DISPATCH(ScoresPc4);
}
template <unsigned B>
PerChannelKernel per_channel_accumulate_kernel() {
  if constexpr (B == 2) return HWY_DYNAMIC_DISPATCH(AccumulatePc2);
  if constexpr (B == 3) return HWY_DYNAMIC_DISPATCH(AccumulatePc3);
  if constexpr (B == 4) return HWY_DYNAMIC_DISPATCH(AccumulatePc4);
}
// Per-call working floats of the per-channel kernels (decoded metadata and
// folded queries): on the stack for the usual shapes.
using KernelScratch = kvq::detail::Scratch<float, 4096>;
}  // namespace detail

// Per-channel tiles (pc2/3/4, model space): n_tiles tiles of G tokens each.
// scores writes out[qi * out_stride + i * G + t] for the n_tiles * G keys;
// accumulate reads weights w[qi * w_stride + i * G + t].
template <unsigned B>
void scores(const PerChannel<B>& codec, const float* q, std::size_t n_q, std::size_t q_stride,
            const std::byte* tiles, std::size_t n_tiles, float* out, std::size_t out_stride) {
  const std::size_t d = codec.head_dim(), g = codec.tokens_per_tile();
  detail::check_run("kvq::kernels::scores", d, q, n_q, q_stride, tiles, n_tiles, out, out_stride, n_tiles * g);
  if (n_q == 0 || n_tiles == 0) return;
  detail::KernelScratch scratch(2 * d + n_q * (d + 1));
  detail::per_channel_scores_kernel<B>()(q, n_q, q_stride, tiles, n_tiles, d, g, scratch.data(), out, out_stride);
}
template <unsigned B>
void accumulate(const PerChannel<B>& codec, const float* w, std::size_t n_q, std::size_t w_stride,
                const std::byte* tiles, std::size_t n_tiles, float* acc, std::size_t acc_stride) {
  const std::size_t d = codec.head_dim(), g = codec.tokens_per_tile();
  detail::check_run("kvq::kernels::accumulate", n_tiles * g, w, n_q, w_stride, tiles, n_tiles, acc, acc_stride, d);
  if (n_q == 0 || n_tiles == 0) return;
  detail::KernelScratch scratch(2 * d);
  detail::per_channel_accumulate_kernel<B>()(w, n_q, w_stride, tiles, n_tiles, d, g, scratch.data(), acc,
                                             acc_stride);
}

// Exact rows (f32, f16 windows, sinks and caches): SIMD when head_dim is a
// multiple of 16, the codec's scalar loop otherwise.
#define KVQ_KERNELS_EXACT_WRAPPERS(CODEC, FMT)                                                             \
  inline void scores(const CODEC& codec, const float* q, std::size_t n_q, std::size_t q_stride,             \
                     const std::byte* rows, std::size_t n_rows, float* out, std::size_t out_stride) {      \
    const std::size_t d = codec.head_dim();                                                                \
    detail::check_run("kvq::kernels::scores", d, q, n_q, q_stride, rows, n_rows, out, out_stride, n_rows); \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    if (d % 16 == 0) return HWY_DYNAMIC_DISPATCH(Scores##FMT)(q, n_q, q_stride, rows, n_rows, d, out, out_stride); \
    for (std::size_t i = 0; i < n_q; ++i)                                                                  \
      for (std::size_t t = 0; t < n_rows; ++t)                                                             \
        codec.scores(q + i * q_stride, rows + t * codec.bytes_per_tile(), out + i * out_stride + t);       \
  }                                                                                                        \
  inline void accumulate(const CODEC& codec, const float* w, std::size_t n_q, std::size_t w_stride,         \
                         const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {  \
    const std::size_t d = codec.head_dim();                                                                \
    detail::check_run("kvq::kernels::accumulate", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride, d); \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    if (d % 16 == 0) return HWY_DYNAMIC_DISPATCH(Accumulate##FMT)(w, n_q, w_stride, rows, n_rows, d, acc, acc_stride); \
    for (std::size_t i = 0; i < n_q; ++i)                                                                  \
      for (std::size_t t = 0; t < n_rows; ++t)                                                             \
        codec.accumulate(acc + i * acc_stride, w + i * w_stride + t, rows + t * codec.bytes_per_tile());   \
  }
KVQ_KERNELS_EXACT_WRAPPERS(kvq::ExactF32, F32)
KVQ_KERNELS_EXACT_WRAPPERS(kvq::ExactF16, F16)
#undef KVQ_KERNELS_EXACT_WRAPPERS

// One online-softmax step over a chunk of scores (softmax-inl.h): for each of
// the n_q rows s + i * stride (n scores, the first n_valid[i] visible, or all
// when n_valid is null) the scores become weights exp(scale * s - m_i'),
// m_i' = max(m_i, scale * max s) is stored in m[i], l[i] = l[i] * corr[i] + sum
// of the weights, corr[i] = exp(m_i - m_i'). Rows must be writable up to n
// rounded up to kSoftmaxPad floats.
inline void online_softmax(float* s, std::size_t n_q, std::size_t stride, std::size_t n, const std::uint32_t* n_valid,
                           float scale, float* m, float* l, float* corr) {
  HWY_DYNAMIC_DISPATCH(OnlineSoftmax)(s, n_q, stride, n, n_valid, scale, m, l, corr);
}
inline constexpr std::size_t kSoftmaxPad = 16;  // the widest vector of any target (softmax-inl.h)

}  // namespace KVQ_KERNELS_ABI
}  // namespace kvq::kernels

#endif  // HWY_ONCE
