// The kernels' public API: typed wrappers (one overload per codec) that check
// their arguments and call the entry points (entry_points.hpp) of the SIMD
// kernels, which Highway dispatches to the best target for the running CPU.
//
// Header-only by default: this header then also compiles the kernels for
// every target (definitions.hpp), which costs ~40 s per TU. With
// KVQ_EXTERN_KERNELS defined in every TU, it only declares them: exactly one
// TU includes <kvq/kernels/definitions.hpp>, or the program links the CMake
// target kvq::kernels (docs/PACKAGING.md). Without KVQ_EXTERN_KERNELS,
// include kvq before any Highway header (definitions.hpp says why).
#pragma once

#include <kvq/kernels/entry_points.hpp>
#if !defined(KVQ_EXTERN_KERNELS)
#include <kvq/kernels/definitions.hpp>
#endif

#include <kvq/cache/exact_codec.hpp>
#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/scratch.hpp>
#include <kvq/kernels/int8_query.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace kvq::kernels {

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
inline const char* target_name() { return entry::KernelTargetName(); }
// The Highway targets the kernels were compiled for (a mask of HWY_* target
// bits): the run-time choice is the best of these the CPU supports. With
// KVQ_STATIC_DISPATCH_ONLY, the static target alone.
inline std::int64_t compiled_targets() { return entry::KernelCompiledTargets(); }
// The integer dot product the int8-query scores (int8_query.hpp) run on this
// CPU: "vnni" (AVX3_DL), "maddubs" (AVX3, AVX2, SSE4, SSSE3), "sdot" (NEON on a
// CPU with the ARMv8.2 dot product: chosen at run time), "neon-widening" (NEON
// without it), "widening" (other SIMD targets), "scalar".
inline const char* int8_dot_path() { return entry::Int8DotPath(); }

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
    entry::Scores##FMT(q, n_q, q_stride, rows, n_rows, codec.head_dim(), out, out_stride); \
  }                                                                                                        \
  inline void accumulate(const CODEC& codec, const float* w, std::size_t n_q, std::size_t w_stride,         \
                         const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {  \
    detail::check_run("kvq::kernels::accumulate", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride, \
                      codec.head_dim());                                                                   \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    entry::Accumulate##FMT(w, n_q, w_stride, rows, n_rows, codec.head_dim(), acc,          \
                                          acc_stride);                                                     \
  }
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q8_0, Q8_0)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q4_0, Q4_0)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q4_1, Q4_1)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q3_1, Q3_1)
KVQ_KERNELS_UNIFORM_WRAPPERS(kvq::Q2_1, Q2_1)
#undef KVQ_KERNELS_UNIFORM_WRAPPERS

// ---------------------------------------------------------------------------
// int8-query scores, an opt-in approximation of scores() for the uniform
// formats' keys (q8_0, q4_0, q4_1, q3_1, q2_1): quantize_queries rounds each query to int8 per block of 32
// values (once per step), scores then uses integer dot products. The error
// against the f32 scores is bounded per row by sum_b (d_b / 2) sum_j |x_j -
// m_b| (d_b: the query block's step, x - m: the key block's code part), plus
// f32 rounding; kvq/reference/int8_query.hpp has the rule and the oracle. A
// query block with NaN or Inf makes its scores NaN. Cache::attend uses this
// path by default (Cache::set_int8_scores).
//
// Turbo keys (turbo2/3/4) have int8 scores too, in rotated space (q: the
// prepared queries), for head_dim a multiple of 32 (supports_int8_scores):
// the codebook is rounded to int8 once per codec (Turbo::int8_codebook) and
// the bound adds its rounding, alpha sum_b d_b e_L sum_j |c_j|
// (reference/int8_query.hpp).
template <class C>
inline constexpr bool kHasInt8Scores =
    std::is_same_v<C, kvq::Q8_0> || std::is_same_v<C, kvq::Q4_0> || std::is_same_v<C, kvq::Q4_1> ||
    std::is_same_v<C, kvq::Q3_1> || std::is_same_v<C, kvq::Q2_1> || std::is_same_v<C, kvq::Turbo2> ||
    std::is_same_v<C, kvq::Turbo3> || std::is_same_v<C, kvq::Turbo4>;

// Whether this codec's shape takes int8 scores (kHasInt8Scores<C> and a
// head_dim of whole 32-value query blocks).
template <class C>
inline bool supports_int8_scores(const C& codec) noexcept {
  return kHasInt8Scores<C> && codec.head_dim() % Int8Queries::kBlockValues == 0;
}

inline void quantize_queries(const float* q, std::size_t n_q, std::size_t q_stride, std::size_t head_dim,
                             Int8Queries& out) {
  if (head_dim == 0 || head_dim % Int8Queries::kBlockValues != 0)
    kvq::detail::fail(Errc::invalid_argument, "kvq::kernels::quantize_queries: head_dim " + std::to_string(head_dim) +
                                                  " is not a positive multiple of 32");
  if (n_q > 0 && !q) kvq::detail::fail(Errc::invalid_argument, "kvq::kernels::quantize_queries: null queries");
  if (n_q > 1 && q_stride < head_dim)
    kvq::detail::fail(Errc::shape_mismatch, "kvq::kernels::quantize_queries: query stride " +
                                                std::to_string(q_stride) + " is below head_dim " +
                                                std::to_string(head_dim));
  out.reshape(n_q, head_dim);
  if (n_q > 0) entry::QuantizeQueriesInt8(q, n_q, q_stride, head_dim, out.data());
}

namespace detail {
inline void check_int8_run(std::size_t codec_head_dim, const Int8Queries& q, const std::byte* rows,
                           std::size_t n_rows, float* out, std::size_t out_stride) {
  if (q.head_dim() != codec_head_dim)
    kvq::detail::fail(Errc::shape_mismatch, "kvq::kernels::scores: int8 queries of head_dim " +
                                                std::to_string(q.head_dim()) + " for a codec of head_dim " +
                                                std::to_string(codec_head_dim));
  check_run("kvq::kernels::scores", 0, q.data(), q.n_q(), 0, rows, n_rows, out, out_stride, n_rows);
}
}  // namespace detail

// out[qi * out_stride + t] = int8 score of query qi of `q` and row t.
#define KVQ_KERNELS_INT8_WRAPPERS(CODEC, FMT)                                                                \
  inline void scores(const CODEC& codec, const Int8Queries& q, const std::byte* rows, std::size_t n_rows,      \
                     float* out, std::size_t out_stride) {                                                     \
    detail::check_int8_run(codec.head_dim(), q, rows, n_rows, out, out_stride);                               \
    if (q.n_q() == 0 || n_rows == 0) return;                                                                   \
    entry::ScoresInt8##FMT(q.data(), q.n_q(), rows, n_rows, codec.head_dim(), out, out_stride);           \
  }
KVQ_KERNELS_INT8_WRAPPERS(kvq::Q8_0, Q8_0)
KVQ_KERNELS_INT8_WRAPPERS(kvq::Q4_0, Q4_0)
KVQ_KERNELS_INT8_WRAPPERS(kvq::Q4_1, Q4_1)
KVQ_KERNELS_INT8_WRAPPERS(kvq::Q3_1, Q3_1)
KVQ_KERNELS_INT8_WRAPPERS(kvq::Q2_1, Q2_1)
#undef KVQ_KERNELS_INT8_WRAPPERS

// Turbo rows: q holds the rotated (prepared) queries.
template <unsigned B>
  requires(B >= 2 && B <= 4)
void scores(const Turbo<B>& codec, const Int8Queries& q, const std::byte* rows, std::size_t n_rows, float* out,
            std::size_t out_stride) {
  detail::check_int8_run(codec.head_dim(), q, rows, n_rows, out, out_stride);
  if (q.n_q() == 0 || n_rows == 0) return;
  const auto& cb = codec.int8_codebook();
  constexpr entry::Int8TurboKernel* kernel = B == 2   ? &entry::ScoresInt8Turbo2
                                             : B == 3 ? &entry::ScoresInt8Turbo3
                                                      : &entry::ScoresInt8Turbo4;
  kernel(cb.levels, cb.step, q.data(), q.n_q(), rows, n_rows, codec.head_dim(), out, out_stride);
}

// ---------------------------------------------------------------------------
// bf16 value accumulation, an opt-in approximation of accumulate() for the
// uniform formats, whose integer codes are exact in bf16 (q8_0, q4_0, q4_1, q3_1, q2_1): on CPUs
// with AVX512_BF16 (and the AVX3_DL kernels) each product p = w * d of a
// weight and a block's scale is rounded to bf16 and multiplied with the exact
// codes by bf16 dot products (kernels/value_products-inl.h); elsewhere it is
// accumulate() itself. The contract, per output value j of each query:
//   |got_j - sum_t w_t x_t[j]| <= 2^-8 sum_t |w_t d_t c_t[j]| + f32 rounding
// (x = d c + m; bf16 keeps 8 significant bits, round to nearest even, so
// |p~ - p| <= 2^-8 |p|; products below 2^-126 may flush to zero; the minimum's
// part sum_t w_t m_t is f32). NaN weights or NaN/Inf scales give NaN as in
// accumulate(). bf16_accumulate_active() tells whether the bf16 path runs.
// On CPUs with AMX-BF16 (Sapphire Rapids and later; Linux, which must grant
// the tile state: once per process) groups of 2 or more queries run on AMX
// tiles, 16 queries per tile product: the same bf16 products under the same
// contract, summed in another order. amx_accumulate_active() tells; set
// KVQ_NO_AMX=1 in the environment to keep vdpbf16ps.
template <class C>
inline constexpr bool kHasBf16Accumulate = std::is_same_v<C, kvq::Q8_0> || std::is_same_v<C, kvq::Q4_0> || std::is_same_v<C, kvq::Q4_1> ||
                                           std::is_same_v<C, kvq::Q3_1> || std::is_same_v<C, kvq::Q2_1>;

// accumulate_int8 also takes turbo rows (their int8 codebook; below); q8_0's
// codes enter it offset to c + 128, like the int8 scores.
template <class C>
inline constexpr bool kHasInt8Accumulate = kHasBf16Accumulate<C> ||
                                           std::is_same_v<C, kvq::Turbo2> || std::is_same_v<C, kvq::Turbo3> ||
                                           std::is_same_v<C, kvq::Turbo4>;

inline bool bf16_accumulate_active() { return entry::Bf16AccumulateActive() != 0; }
inline bool amx_accumulate_active() { return entry::Bf16AccumulateActive() == 2; }

// accumulate_int8: the same rows (and q8_0) with int8 products on the AVX3_DL kernels
// (AVX512-VNNI vpdpbusd, 64 multiply-adds per instruction); elsewhere
// accumulate() itself. Each product p_t = w_t d_t is rounded to a multiple of
// the step s = max_t |w_t| * max_t |d_t| / 127, maxima over a tile of 32 rows
// (the call's rows 0..31, 32..63, ...) for each query and block, so per
// output value j
//   |got_j - sum_t w_t x_t[j]| <= sum_tiles (s / 2) sum_{t in tile} |c_t[j]| + f32 rounding
// (c: the code value, n - 8 for q4_0); a NaN/Inf weight, scale or minimum
// (or max|w| max|d| beyond the f32 range) makes the block's 32 values
// non-finite.
// One wrapper per (operation OP, codec): accumulate_bf16, accumulate_int8.
#define KVQ_KERNELS_VALUE_PRODUCT_WRAPPER(OP, ENTRY, CODEC, FMT)                                              \
  inline void OP(const CODEC& codec, const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows, \
                 std::size_t n_rows, float* acc, std::size_t acc_stride) {                                       \
    detail::check_run("kvq::kernels::" #OP, n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride,            \
                      codec.head_dim());                                                                         \
    if (n_q == 0 || n_rows == 0) return;                                                                         \
    entry::ENTRY##FMT(w, n_q, w_stride, rows, n_rows, codec.head_dim(), acc, acc_stride);                       \
  }
#define KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(CODEC, FMT)                   \
  KVQ_KERNELS_VALUE_PRODUCT_WRAPPER(accumulate_bf16, AccumulateBf16, CODEC, FMT) \
  KVQ_KERNELS_VALUE_PRODUCT_WRAPPER(accumulate_int8, AccumulateInt8, CODEC, FMT)
KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(kvq::Q4_0, Q4_0)
KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(kvq::Q4_1, Q4_1)
KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(kvq::Q3_1, Q3_1)
KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(kvq::Q2_1, Q2_1)
KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS(kvq::Q8_0, Q8_0)
#undef KVQ_KERNELS_VALUE_PRODUCT_WRAPPERS
#undef KVQ_KERNELS_VALUE_PRODUCT_WRAPPER

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
using TurboKernel = entry::TurboKernel*;
template <unsigned B>
TurboKernel turbo_scores_kernel() {
  if constexpr (B == 2) return &entry::ScoresTurbo2;
  if constexpr (B == 3) return &entry::ScoresTurbo3;
  if constexpr (B == 4) return &entry::ScoresTurbo4;
}
template <unsigned B>
TurboKernel turbo_accumulate_kernel() {
  if constexpr (B == 2) return &entry::AccumulateTurbo2;
  if constexpr (B == 3) return &entry::AccumulateTurbo3;
  if constexpr (B == 4) return &entry::AccumulateTurbo4;
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

// accumulate_int8 for turbo rows (accumulate_int8 above, in rotated space):
// on the AVX3_DL kernels p_t = w_t alpha_t s_L is rounded to a multiple of
// s = max_t |w_t| max_t |alpha_t s_L| / 127 per query and tile of 32 rows,
// and multiplied with the int8 codebook l (Turbo::int8_codebook) by vpdpbusd;
// per output value j of a query
//   |got_j - sum_t w_t alpha_t L[idx_t,j]| <= sum_tiles (s / 2) sum_t |l[idx_t,j]| + e_L sum_t |w_t alpha_t|
// plus f32 rounding (e_L: the codebook's rounding error). Elsewhere, and for
// head_dim not a multiple of 32, accumulate() itself.
template <unsigned B>
  requires(B >= 2 && B <= 4)
void accumulate_int8(const Turbo<B>& codec, const float* w, std::size_t n_q, std::size_t w_stride,
                     const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {
  if (codec.head_dim() % 32 != 0) return accumulate(codec, w, n_q, w_stride, rows, n_rows, acc, acc_stride);
  detail::check_run("kvq::kernels::accumulate_int8", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride,
                    codec.head_dim());
  if (n_q == 0 || n_rows == 0) return;
  const detail::PaddedCodebook<B> table(codec);
  const auto& cb = codec.int8_codebook();
  constexpr entry::Int8TurboAccumulateKernel* kernel = B == 2   ? &entry::AccumulateInt8Turbo2
                                                       : B == 3 ? &entry::AccumulateInt8Turbo3
                                                                : &entry::AccumulateInt8Turbo4;
  kernel(table.levels, cb.levels, cb.step, w, n_q, w_stride, rows, n_rows, codec.head_dim(), acc, acc_stride);
}

namespace detail {
using PerChannelKernel = entry::PerChannelKernel*;
template <unsigned B>
PerChannelKernel per_channel_scores_kernel() {
  if constexpr (B == 2) return &entry::ScoresPc2;
  if constexpr (B == 3) return &entry::ScoresPc3;
  if constexpr (B == 4) return &entry::ScoresPc4;
}
template <unsigned B>
PerChannelKernel per_channel_accumulate_kernel() {
  if constexpr (B == 2) return &entry::AccumulatePc2;
  if constexpr (B == 3) return &entry::AccumulatePc3;
  if constexpr (B == 4) return &entry::AccumulatePc4;
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

// int8 scores of per-channel tiles, an approximation of scores() above
// (f32 queries in, the same output): per tile and query the folded query
// q'_c = q_c s_c is rounded to int8 per block of 32 channels, the offsets'
// term stays f32; |error| <= sum_b (d_b / 2) sum_j k[t][32b + j] plus f32
// rounding (reference/int8_query.hpp). For head_dim a multiple of 32 and
// tile_tokens a multiple of 64 (pc4) or 128 (pc3, pc2): supports_int8_scores.
// Cache::attend uses it with set_int8_scores (the default).
template <class C>
inline constexpr bool kHasTileInt8Scores = std::is_same_v<C, PerChannel<2>> || std::is_same_v<C, PerChannel<3>> ||
                                           std::is_same_v<C, PerChannel<4>>;
template <unsigned B>
inline bool supports_int8_scores(const PerChannel<B>& codec) noexcept {
  return reference::per_channel_int8_supported(B, codec.head_dim(), codec.tokens_per_tile());
}
namespace detail {
template <unsigned B>
PerChannelKernel per_channel_int8_scores_kernel() {
  if constexpr (B == 2) return &entry::ScoresInt8Pc2;
  if constexpr (B == 3) return &entry::ScoresInt8Pc3;
  if constexpr (B == 4) return &entry::ScoresInt8Pc4;
}
}  // namespace detail
template <unsigned B>
void scores_int8(const PerChannel<B>& codec, const float* q, std::size_t n_q, std::size_t q_stride,
                 const std::byte* tiles, std::size_t n_tiles, float* out, std::size_t out_stride) {
  const std::size_t d = codec.head_dim(), g = codec.tokens_per_tile();
  detail::check_run("kvq::kernels::scores_int8", d, q, n_q, q_stride, tiles, n_tiles, out, out_stride, n_tiles * g);
  if (!supports_int8_scores(codec))
    kvq::detail::fail(Errc::invalid_argument, std::string("kvq::kernels::scores_int8: ") + std::string(codec.name) +
                                                  " with head_dim " + std::to_string(d) + " and tile_tokens " +
                                                  std::to_string(g) + " has no int8 scores");
  if (n_q == 0 || n_tiles == 0) return;
  detail::KernelScratch scratch(2 * d + n_q * (d + 1 + d / 32 + d / 4));
  detail::per_channel_int8_scores_kernel<B>()(q, n_q, q_stride, tiles, n_tiles, d, g, scratch.data(), out,
                                              out_stride);
}

// Exact rows (f32, f16 windows, sinks and caches): SIMD when head_dim is a
// multiple of 16, the codec's scalar loop otherwise.
#define KVQ_KERNELS_EXACT_WRAPPERS(CODEC, FMT)                                                             \
  inline void scores(const CODEC& codec, const float* q, std::size_t n_q, std::size_t q_stride,             \
                     const std::byte* rows, std::size_t n_rows, float* out, std::size_t out_stride) {      \
    const std::size_t d = codec.head_dim();                                                                \
    detail::check_run("kvq::kernels::scores", d, q, n_q, q_stride, rows, n_rows, out, out_stride, n_rows); \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    if (d % 16 == 0) return entry::Scores##FMT(q, n_q, q_stride, rows, n_rows, d, out, out_stride); \
    for (std::size_t i = 0; i < n_q; ++i)                                                                  \
      for (std::size_t t = 0; t < n_rows; ++t)                                                             \
        codec.scores(q + i * q_stride, rows + t * codec.bytes_per_tile(), out + i * out_stride + t);       \
  }                                                                                                        \
  inline void accumulate(const CODEC& codec, const float* w, std::size_t n_q, std::size_t w_stride,         \
                         const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride) {  \
    const std::size_t d = codec.head_dim();                                                                \
    detail::check_run("kvq::kernels::accumulate", n_rows, w, n_q, w_stride, rows, n_rows, acc, acc_stride, d); \
    if (n_q == 0 || n_rows == 0) return;                                                                   \
    if (d % 16 == 0) return entry::Accumulate##FMT(w, n_q, w_stride, rows, n_rows, d, acc, acc_stride); \
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
  entry::OnlineSoftmax(s, n_q, stride, n, n_valid, scale, m, l, corr);
}
inline constexpr std::size_t kSoftmaxPad = 16;  // the widest vector of any target (softmax-inl.h)

}  // namespace KVQ_KERNELS_ABI
}  // namespace kvq::kernels

