// The kernels' entry points as plain functions: the seam between the code
// that *calls* kernels (the wrappers in dispatch.hpp, the cache) and the code
// that *compiles* them (definitions.hpp: Highway, every SIMD target).
//
// Two build modes, chosen per program by one macro (define it identically in
// every TU, as {fmt}'s FMT_HEADER_ONLY):
//   (default)           header-only: every TU that includes <kvq/kvq.hpp>
//                       compiles the kernels for every target (~40 s a TU);
//                       the entry points are inline functions.
//   KVQ_EXTERN_KERNELS  TUs see these declarations only (no Highway, a few
//                       seconds a TU); exactly one TU of the program includes
//                       <kvq/kernels/definitions.hpp>, or the program links
//                       the CMake target kvq::kernels, which does that.
// Highway-free on purpose: an extern-mode TU never parses Highway.
#pragma once

#include <cstddef>
#include <cstdint>

// Mirrors the AVX3_DL baseline test of hwy/detect_targets.h (1.0.3): flags
// that make AVX3_DL the static target need HWY_WANT_AVX3_DL (see
// definitions.hpp). Decided here because the ABI name below depends on it.
#if !defined(HWY_WANT_AVX3_DL) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVXVNNI__) && defined(__VAES__) && defined(__VPCLMULQDQ__) &&       \
    defined(__AVX512VBMI__) && defined(__AVX512VBMI2__) && defined(__AVX512VPOPCNTDQ__) &&                 \
    defined(__AVX512BITALG__)
#define HWY_WANT_AVX3_DL
#endif
// Dynamic builds compile AVX3_DL too: the int8 query scores use AVX512-VNNI
// there (Ice Lake, Sapphire Rapids, Zen 4 and later). AVX-512 CPUs with VNNI
// but without the rest of AVX3_DL (Cascade Lake) run the AVX3 copy (maddubs).
// KVQ_NO_AVX3_DL opts out (one target fewer to compile).
#if !defined(KVQ_STATIC_DISPATCH_ONLY) && !defined(HWY_COMPILE_ONLY_STATIC) && !defined(HWY_WANT_AVX3_DL) && \
    !defined(KVQ_NO_AVX3_DL)
#define HWY_WANT_AVX3_DL
#endif

// The wrappers and entry points live in an inline namespace named after the
// configuration, so TUs built with different settings link without sharing
// (and mixing up) inline functions or dispatch tables.
#if defined(KVQ_EXTERN_KERNELS)
#define KVQ_KERNELS_ABI abi_extern
#elif defined(KVQ_STATIC_DISPATCH_ONLY) || defined(HWY_COMPILE_ONLY_STATIC)
#define KVQ_KERNELS_ABI abi_static
#elif defined(HWY_WANT_AVX3_DL)
#define KVQ_KERNELS_ABI abi_dynamic_dl
#else
#define KVQ_KERNELS_ABI abi_dynamic
#endif

namespace kvq::kernels {
inline namespace KVQ_KERNELS_ABI {
namespace entry {

// Row formats (uniform, exact): scores read queries `in` and write scores
// `out`; accumulate reads weights `in` and adds into accumulators `out`.
using RowKernel = void(const float* in, std::size_t n_q, std::size_t in_stride, const std::byte* rows,
                       std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride);
// Turbo rows: the same after the padded codebook (16 floats).
using TurboKernel = void(const float* levels, const float* in, std::size_t n_q, std::size_t in_stride,
                         const std::byte* rows, std::size_t n_rows, std::size_t head_dim, float* out,
                         std::size_t out_stride);
// Per-channel tiles of g tokens, with caller-provided working floats.
using PerChannelKernel = void(const float* in, std::size_t n_q, std::size_t in_stride, const std::byte* tiles,
                              std::size_t n_tiles, std::size_t head_dim, std::size_t g, float* scratch,
                              float* out, std::size_t out_stride);
using SoftmaxKernel = void(float* s, std::size_t n_q, std::size_t stride, std::size_t n, const std::uint32_t* n_valid,
                           float scale, float* m, float* l, float* corr);
// int8-query scores (int8_query-inl.h): queries into the Int8Queries layout,
// then scores of that layout against uniform rows.
using QuantizeKernel = void(const float* q, std::size_t n_q, std::size_t q_stride, std::size_t head_dim,
                            std::byte* out);
using Int8ScoresKernel = void(const std::byte* qq, std::size_t n_q, const std::byte* rows, std::size_t n_rows,
                              std::size_t head_dim, float* out, std::size_t out_stride);
// int8-query scores of turbo rows: the same after the int8 codebook (16
// bytes, reference::Int8Codebook) and its step.
using Int8TurboKernel = void(const std::int8_t* levels, float step, const std::byte* qq, std::size_t n_q,
                             const std::byte* rows, std::size_t n_rows, std::size_t head_dim, float* out,
                             std::size_t out_stride);
// int8 value products of turbo rows: the f32 codebook (16 floats, for the
// targets without them), the int8 codebook and its step, then RowKernel's.
using Int8TurboAccumulateKernel = void(const float* table, const std::int8_t* levels, float step, const float* w,
                                       std::size_t n_q, std::size_t w_stride, const std::byte* rows,
                                       std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride);
using TargetNameKernel = const char*();
using TargetMaskKernel = std::int64_t();

// Every entry point: X(type, name), by kernel family. definitions.hpp
// defines each one as a call through Highway's dispatch table of the same
// name; kvq::kernels compiles each family in a TU of its own (KVQ_KERNEL_FAMILY).
#define KVQ_EXACT_ENTRY_POINTS(X)                                                                           \
  X(TargetNameKernel, KernelTargetName)                                                                     \
  X(TargetMaskKernel, KernelCompiledTargets)                                                                \
  X(RowKernel, ScoresF32) X(RowKernel, ScoresF16) X(RowKernel, AccumulateF32) X(RowKernel, AccumulateF16)     \
  X(SoftmaxKernel, OnlineSoftmax)
#define KVQ_UNIFORM_SCORES_ENTRY_POINTS(X)                                                                  \
  X(RowKernel, ScoresQ8_0) X(RowKernel, ScoresQ4_0) X(RowKernel, ScoresQ4_1) X(RowKernel, ScoresQ3_1)       \
  X(RowKernel, ScoresQ2_1)
#define KVQ_UNIFORM_ACCUMULATE_ENTRY_POINTS(X)                                                              \
  X(RowKernel, AccumulateQ8_0) X(RowKernel, AccumulateQ4_0) X(RowKernel, AccumulateQ4_1)                     \
  X(RowKernel, AccumulateQ3_1) X(RowKernel, AccumulateQ2_1)                                                 \
  X(RowKernel, AccumulateBf16Q8_0) X(RowKernel, AccumulateBf16Q4_0) X(RowKernel, AccumulateBf16Q4_1) X(RowKernel, AccumulateBf16Q3_1)         \
  X(RowKernel, AccumulateBf16Q2_1) X(TargetMaskKernel, Bf16AccumulateActive)                               \
  X(RowKernel, AccumulateInt8Q4_0) X(RowKernel, AccumulateInt8Q4_1) X(RowKernel, AccumulateInt8Q3_1)         \
  X(RowKernel, AccumulateInt8Q2_1) X(RowKernel, AccumulateInt8Q8_0)
#define KVQ_INT8_QUERY_ENTRY_POINTS(X)                                                                      \
  X(TargetNameKernel, Int8DotPath)                                                                          \
  X(QuantizeKernel, QuantizeQueriesInt8) X(Int8ScoresKernel, ScoresInt8Q8_0)                                 \
  X(Int8ScoresKernel, ScoresInt8Q4_0) X(Int8ScoresKernel, ScoresInt8Q4_1) X(Int8ScoresKernel, ScoresInt8Q3_1)   \
  X(Int8ScoresKernel, ScoresInt8Q2_1)
#define KVQ_TURBO_ENTRY_POINTS(X)                                                                           \
  X(TurboKernel, ScoresTurbo2) X(TurboKernel, ScoresTurbo3) X(TurboKernel, ScoresTurbo4)                     \
  X(TurboKernel, AccumulateTurbo2) X(TurboKernel, AccumulateTurbo3) X(TurboKernel, AccumulateTurbo4)     \
  X(Int8TurboKernel, ScoresInt8Turbo2) X(Int8TurboKernel, ScoresInt8Turbo3) X(Int8TurboKernel, ScoresInt8Turbo4) \
  X(Int8TurboAccumulateKernel, AccumulateInt8Turbo2) X(Int8TurboAccumulateKernel, AccumulateInt8Turbo3)      \
  X(Int8TurboAccumulateKernel, AccumulateInt8Turbo4)
#define KVQ_PER_CHANNEL_ENTRY_POINTS(X)                                                                     \
  X(PerChannelKernel, ScoresPc2) X(PerChannelKernel, ScoresPc3) X(PerChannelKernel, ScoresPc4)               \
  X(PerChannelKernel, AccumulatePc2) X(PerChannelKernel, AccumulatePc3) X(PerChannelKernel, AccumulatePc4)     \
  X(PerChannelKernel, ScoresInt8Pc2) X(PerChannelKernel, ScoresInt8Pc3) X(PerChannelKernel, ScoresInt8Pc4)
#define KVQ_KERNEL_ENTRY_POINTS(X)                                                                          \
  KVQ_EXACT_ENTRY_POINTS(X) KVQ_UNIFORM_SCORES_ENTRY_POINTS(X) KVQ_UNIFORM_ACCUMULATE_ENTRY_POINTS(X)       \
  KVQ_INT8_QUERY_ENTRY_POINTS(X)                                                                            \
  KVQ_TURBO_ENTRY_POINTS(X) KVQ_PER_CHANNEL_ENTRY_POINTS(X)

// KVQ_KERNEL_FAMILY's values (see definitions.hpp).
#define KVQ_FAMILY_EXACT 1
#define KVQ_FAMILY_UNIFORM_SCORES 2
#define KVQ_FAMILY_UNIFORM_ACCUMULATE 3
#define KVQ_FAMILY_INT8_QUERY 4
#define KVQ_FAMILY_TURBO 5
#define KVQ_FAMILY_PER_CHANNEL 6

#if defined(KVQ_EXTERN_KERNELS)
// A function declared through its type alias: `RowKernel ScoresQ8_0;`.
#define KVQ_DECLARE_ENTRY_POINT(TYPE, NAME) TYPE NAME;
KVQ_KERNEL_ENTRY_POINTS(KVQ_DECLARE_ENTRY_POINT)
#undef KVQ_DECLARE_ENTRY_POINT
#endif

}  // namespace entry
}  // namespace KVQ_KERNELS_ABI
}  // namespace kvq::kernels
