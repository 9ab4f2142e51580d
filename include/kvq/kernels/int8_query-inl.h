// int8-query scores: queries quantized once per step to int8 per block of
// 32 values (kernels/int8_query.hpp's layout), scored against uniform rows
// with integer dot products (int8_dot-inl.h), one f32 scale per block pair
// (d_k d_q) and, for the formats with a minimum, m_k * sum(q).
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The scalar oracle and the accuracy
// contract are kvq/reference/int8_query.hpp. The row loop is rows-inl.h's
// ScoresDriver, shared with the f32 scores; this file only adds the tile.
//
// An int8 decoder (a rows-inl.h block decoder with kBlock 32: the uniform
// formats; turbo's Int8Rows, two index groups per block) additionally provides:
//   static constexpr int kInt8Bias;     // the query bias section: 128, 8 or 0
//   static constexpr bool kInt8Signed;  // codes are int8 (DotSigned), else small unsigned
//   static constexpr bool kInt8Min;     // m_k * sum(q) per block
//   template <N> void Int8Codes(const uint8_t* blk, VB* v) const;     // kGroupVecs vectors
//   template <N> void Int8Scales(const uint8_t* blk, VF& d, VF& m) const;  // unless kRowScale
//   using Reference = kvq::reference::...Block;  // uniform: the SCALAR target's loop, or
//   float ReferenceRow(const reference::Int8QueryBlock*, const std::byte* row,
//                      std::size_t head_dim) const;   // its own reference
// for a group of N blocks starting at blk (int8_dot-inl.h's LoadGroup*). With
// kRowScale (turbo) the key has no block scale: the score of a row is its
// RowScale times sum_b d_q,b (integer dot), applied once per row.
//
// Why it is faster than f32 queries: per block and row the decoder makes
// bytes instead of floats (no byte->int32 widening, no int->float convert per
// value, no decode FMA), and per block, row and query the work is one integer
// dot product (64 values per instruction with VNNI), one convert, one scale
// multiply and one FMA instead of one FMA per 16 values.
#include <kvq/core/half.hpp>
#include <kvq/core/scratch.hpp>
#include <kvq/kernels/int8_query.hpp>
#include <kvq/reference/int8_query.hpp>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(KVQ_KERNELS_INT8_QUERY_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_INT8_QUERY_INL_H_
#undef KVQ_KERNELS_INT8_QUERY_INL_H_
#else
#define KVQ_KERNELS_INT8_QUERY_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace int8_query {

namespace hn = hwy::HWY_NAMESPACE;
using namespace row_kernels;  // DF, VF, kLanes, ScoresDriver, StoreScores, KVQ_UNROLL

inline constexpr std::size_t kSection = Int8Queries::kSectionBytes;  // bytes per block and section
enum Section : std::size_t { kCodes = 0, kBias128 = 1, kBias8 = 2, kStep = 3, kSum = 4 };

// ---------------------------------------------------------------------------
// Quantization (reference::quantize_query_block, bit for bit in the codes).

// One block of 32 values x: writes its 32 codes (zeros for a zero or
// non-finite block) and sum, returns the step d (NaN for NaN/Inf).
HWY_INLINE float QuantizeBlock(const float* HWY_RESTRICT x, std::int8_t* HWY_RESTRICT codes, float& sum) {
  const DF df;
  const hn::Rebind<std::int8_t, DF> di8;
  VF vmax = hn::Zero(df), vsum = hn::Zero(df);
  KVQ_UNROLL
  for (std::size_t k = 0; k < 32 / kLanes; ++k) {
    const VF v = hn::LoadU(df, x + k * kLanes);
    vmax = hn::Max(vmax, hn::Abs(v));
    vsum = hn::Add(vsum, v);
  }
  const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  float d = std::numeric_limits<float>::quiet_NaN();  // NaN/Inf in the block: NaN scores, codes 0
  if (amax <= FLT_MAX && std::isfinite(sum)) {
    d = amax / 127.0f;
    if (d > 0.0f) {
      const VF vd = hn::Set(df, d);
      KVQ_UNROLL
      for (std::size_t k = 0; k < 32 / kLanes; ++k)
        hn::StoreU(hn::DemoteTo(di8, hn::NearestInt(hn::Div(hn::LoadU(df, x + k * kLanes), vd))), di8,
                   codes + k * kLanes);
      return d;
    }
  }
  std::memset(codes, 0, 32);
  return d;
}

// n_q queries q + i * q_stride of head_dim values into `out` (Int8Queries
// layout, stride bytes per query).
inline void QuantizeQueriesInt8(const float* q, std::size_t n_q, std::size_t q_stride, std::size_t head_dim,
                                std::byte* out) {
  const std::size_t n_blocks = head_dim / 32, n_pb = (n_blocks + 1) / 2 * 2, sec = n_pb * kSection;
  for (std::size_t i = 0; i < n_q; ++i) {
    std::byte* base = out + i * n_pb * Int8Queries::kSections * kSection;
    std::memset(base, 0, n_pb * Int8Queries::kSections * kSection);
    for (std::size_t b = 0; b < n_blocks; ++b) {
      std::int8_t* codes = reinterpret_cast<std::int8_t*>(base + kCodes * sec + b * kSection);
      float sum;
      const float d = QuantizeBlock(q + i * q_stride + b * 32, codes, sum);
      std::int32_t bias128[8], bias8[8];
      float step[8], sums[8] = {sum};
      for (std::size_t l = 0; l < 8; ++l) {
        const std::int32_t s = codes[4 * l] + codes[4 * l + 1] + codes[4 * l + 2] + codes[4 * l + 3];
        bias128[l] = -128 * s;
        bias8[l] = -8 * s;
        step[l] = d;
      }
      std::memcpy(base + kBias128 * sec + b * kSection, bias128, kSection);
      std::memcpy(base + kBias8 * sec + b * kSection, bias8, kSection);
      std::memcpy(base + kStep * sec + b * kSection, step, kSection);
      std::memcpy(base + kSum * sec + b * kSection, sums, kSection);
    }
  }
}

// ---------------------------------------------------------------------------
// Scores of int8 queries.

#if HWY_TARGET != HWY_SCALAR
using namespace int8_dot;  // VB, VI8, VI, kGroupBlocks, kGroupVecs, DotSmall, DotSigned, ...

template <class Fmt>
HWY_INLINE const std::uint8_t* BiasSection(const std::uint8_t* qq, std::size_t sec) {
  if constexpr (Fmt::kInt8Bias == 128) return qq + kBias128 * sec;
  if constexpr (Fmt::kInt8Bias == 8) return qq + kBias8 * sec;
  (void)sec;
  return qq;  // unused
}

// Blocks [b, b + N) of rows [0, R) for queries [0, G), into acc, with Dot's
// dot products (int8_dot-inl.h).
template <class Fmt, class Dot, std::size_t R, std::size_t G, std::size_t N>
HWY_INLINE void ScoresInt8Group(const Fmt& fmt, const std::uint8_t* HWY_RESTRICT qq, std::size_t q_bytes,
                                std::size_t sec, const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes,
                                std::size_t b, VF (&acc)[R][G]) {
  static_assert(Fmt::kInt8Bias == 0 || Fmt::kInt8Bias == 8 || Fmt::kInt8Bias == 128);
  const DF df;
  const DI di;
  const DI8 di8;
  const std::uint8_t* qc = qq + kCodes * sec + b * kSection;
  const std::uint8_t* qbias = BiasSection<Fmt>(qq, sec) + b * kSection;
  const std::uint8_t* qstep = qq + kStep * sec + b * kSection;
  const std::uint8_t* qsum = qq + kSum * sec + b * kSection;
  KVQ_UNROLL
  for (std::size_t r = 0; r < R; ++r) {
    const std::uint8_t* blk = rows + r * row_bytes + Fmt::kHeader + b * Fmt::kBytes;
    VB k[kGroupVecs];
    fmt.template Int8Codes<N>(blk, k);
    VF d, m;
    if constexpr (!Fmt::kRowScale) fmt.template Int8Scales<N>(blk, d, m);
    SignedKey sk[kGroupVecs];
    if constexpr (Fmt::kInt8Signed)
      KVQ_UNROLL
      for (std::size_t v = 0; v < kGroupVecs; ++v) sk[v] = PrepareSigned(hn::BitCast(di8, k[v]));
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      const std::size_t qo = g * q_bytes;
      KVQ_UNROLL
      for (std::size_t v = 0; v < kGroupVecs; ++v) {
        const std::size_t o = qo + v * kVecBytes;
        VI s = Fmt::kInt8Bias ? hn::LoadU(di, reinterpret_cast<const std::int32_t*>(qbias + o)) : hn::Zero(di);
        const VI8 qv = hn::LoadU(di8, reinterpret_cast<const std::int8_t*>(qc + o));
        if constexpr (Fmt::kInt8Signed)
          s = Dot::Signed(sk[v], qv, s);
        else
          s = Dot::Small(k[v], qv, s);
        const VF q_step = hn::LoadU(df, reinterpret_cast<const float*>(qstep + o));
        const VF scale = Fmt::kRowScale ? q_step : hn::Mul(d, q_step);
        acc[r][g] = hn::MulAdd(hn::ConvertTo(df, s), scale, acc[r][g]);
        if constexpr (Fmt::kInt8Min)
          acc[r][g] = hn::MulAdd(m, hn::LoadU(df, reinterpret_cast<const float*>(qsum + o)), acc[r][g]);
      }
    }
  }
}

template <class Fmt, class Dot>
struct Int8ScoresTile {
  const Fmt& fmt;
  const std::uint8_t* qq;
  std::size_t q_bytes, sec;
  const std::uint8_t* rows;
  std::size_t row_bytes, n_blocks;
  float* out;
  std::size_t out_stride;
  template <std::size_t R, std::size_t G>
  HWY_INLINE void Run(std::size_t g, std::size_t t) const {
    VF acc[R][G];
    KVQ_UNROLL
    for (std::size_t r = 0; r < R; ++r)
      KVQ_UNROLL
      for (std::size_t j = 0; j < G; ++j) acc[r][j] = hn::Zero(DF());
    const std::uint8_t* q0 = qq + g * q_bytes;
    const std::uint8_t* r0 = rows + t * row_bytes;
    std::size_t b = 0;
    for (; b + kGroupBlocks <= n_blocks; b += kGroupBlocks)
      ScoresInt8Group<Fmt, Dot, R, G, kGroupBlocks>(fmt, q0, q_bytes, sec, r0, row_bytes, b, acc);
    if constexpr (kGroupBlocks == 2)
      if (b < n_blocks) ScoresInt8Group<Fmt, Dot, R, G, 1>(fmt, q0, q_bytes, sec, r0, row_bytes, b, acc);
    if constexpr (Fmt::kRowScale)
      KVQ_UNROLL
      for (std::size_t r = 0; r < R; ++r) {
        const VF scale = hn::Set(DF(), fmt.RowScale(r0 + r * row_bytes));
        KVQ_UNROLL
        for (std::size_t j = 0; j < G; ++j) acc[r][j] = hn::Mul(acc[r][j], scale);
      }
    StoreScores<R, G>(acc, out + g * out_stride + t, out_stride);
  }
};

// ---------------------------------------------------------------------------
// Token lanes (GQA groups): the tile above spends, per row, query and vector
// of codes, a dot product, a convert, a scale multiply and an FMA, and a
// horizontal sum per row and query. With kLanes rows transposed so that int32
// lane r holds 4 codes of row r, a query's 4 codes are one broadcast, each
// dot product covers kLanes rows, and the convert and scale come once per
// block of 32 values and kLanes rows: the per-query work shrinks ~3x, and the
// rows' decode and transpose (AVX-512: 64 shuffles per 64 values of 16 rows)
// are shared by the group. One query gains nothing from that (measured), so
// groups of one keep the row tiles. The scales (fp16 d, m at Fmt::kScaleAt,
// kMinAt) are gathered per block; a row scale (turbo: the fp16 at
// kRowScaleAt times RowScaleFactor()) multiplies a row's lane at the end.
// Compiled where GQA decoding happens (AVX2 and up, NEON); the 128-bit x86
// targets and EMU128 keep the row tiles, which saves their build time (#14).
#undef KVQ_TOKEN_LANES
#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2) || HWY_TARGET == HWY_NEON
#define KVQ_TOKEN_LANES 1
#else
#define KVQ_TOKEN_LANES 0
#endif
inline constexpr std::size_t kTokenLanes = kLanes;  // rows per tile
inline constexpr std::size_t kTokenLanesMinGroup = 2;
inline constexpr std::size_t kTokenLanesMaxGroup = 16;  // queries per sweep (accumulators in L1)
inline constexpr std::size_t kGroupWords = kGroupVecs * kLanes;  // 4-code words per row and group, 8 per block
static_assert(kGroupWords == 8 * kGroupBlocks, "a block is 8 words of 4 codes");

// v[r] (word c of row r in lane c) -> v[c] (word c of row r in lane r).
HWY_INLINE void TransposeWords(VB (&v)[kLanes]) {
#if HWY_TARGET <= HWY_AVX3
  __m512i t[16], u[16];
  KVQ_UNROLL
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i].raw, v[i + 1].raw);
    t[i + 1] = _mm512_unpackhi_epi32(v[i].raw, v[i + 1].raw);
  }
  // u[4i + e], 128-bit chunk j: word 4j + e of rows 4i..4i+3.
  KVQ_UNROLL
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // A 4x4 transpose of 128-bit chunks for each e.
  KVQ_UNROLL
  for (int e = 0; e < 4; ++e) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44), x1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44);
    const __m512i x3 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xEE);
    v[e] = VB{_mm512_shuffle_i32x4(x0, x2, 0x88)};
    v[4 + e] = VB{_mm512_shuffle_i32x4(x0, x2, 0xDD)};
    v[8 + e] = VB{_mm512_shuffle_i32x4(x1, x3, 0x88)};
    v[12 + e] = VB{_mm512_shuffle_i32x4(x1, x3, 0xDD)};
  }
#else
  static_assert(kLanes == 4 || kLanes == 8);
  const DI di;
  const hn::Repartition<std::int64_t, DI> d64;
  VI t[kLanes], u[kLanes];
  KVQ_UNROLL
  for (std::size_t i = 0; i < kLanes; i += 2) {
    const VI a = hn::BitCast(di, v[i]), b = hn::BitCast(di, v[i + 1]);
    t[i] = hn::InterleaveLower(di, a, b);
    t[i + 1] = hn::InterleaveUpper(di, a, b);
  }
  // u[4i + e], 128-bit block j: word 4j + e of rows 4i..4i+3.
  KVQ_UNROLL
  for (std::size_t i = 0; i < kLanes; i += 4)
    KVQ_UNROLL
    for (std::size_t h = 0; h < 2; ++h) {
      const auto a = hn::BitCast(d64, t[i + h]), b = hn::BitCast(d64, t[i + h + 2]);
      u[i + 2 * h] = hn::BitCast(di, hn::InterleaveLower(d64, a, b));
      u[i + 2 * h + 1] = hn::BitCast(di, hn::InterleaveUpper(d64, a, b));
    }
  if constexpr (kLanes == 4) {
    KVQ_UNROLL
    for (std::size_t c = 0; c < 4; ++c) v[c] = hn::BitCast(DB(), u[c]);
  } else {
    KVQ_UNROLL
    for (std::size_t e = 0; e < 4; ++e) {
      v[e] = hn::BitCast(DB(), hn::ConcatLowerLower(di, u[4 + e], u[e]));
      v[4 + e] = hn::BitCast(DB(), hn::ConcatUpperUpper(di, u[4 + e], u[e]));
    }
  }
#endif
}

// Where the tile's rows are: row r at rows + r * row_bytes (as gather offsets
// on AVX-512).
struct TileRows {
  std::size_t row_bytes;
#if HWY_TARGET <= HWY_AVX3
  __m512i offsets;
  explicit TileRows(std::size_t bytes)
      : row_bytes(bytes),
        offsets(_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                   _mm512_set1_epi32(static_cast<int>(bytes)))) {}
#else
  explicit TileRows(std::size_t bytes) : row_bytes(bytes) {}
#endif
};

// The fp16 field at p + r * row_bytes of the tile's rows, widened, in lane r
// (bit-exactly like kvq::half_bits_to_float; see LoadHalf for the targets).
HWY_INLINE VF GatherHalf(const std::uint8_t* p, const TileRows& at) {
#if HWY_TARGET <= HWY_AVX3
  const __m512i w = _mm512_i32gather_epi32(at.offsets, p, 1);
  return VF{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(w))};
#else
  alignas(16) std::uint16_t h[kLanes];
  KVQ_UNROLL
  for (std::size_t r = 0; r < kLanes; ++r) std::memcpy(&h[r], p + r * at.row_bytes, 2);
  return WidenHalves(h);
#endif
}

// A query's per-block constants for the token lanes.
struct QueryBlockTerms {
  std::int32_t bias;  // the lanes' bias section, summed
  float step, sum;
};

// Blocks [b, b + N) of the tile's rows for queries [0, n_q) into acc (lane
// r: row r). The group size is a run-time loop: the transposed codes stay in
// registers across it and each query's accumulator is one load and store per
// block, so one copy serves every group size (compile time, #14).
template <class Fmt, class Dot, std::size_t N>
HWY_INLINE void TokenLanesGroup(const Fmt& fmt, const std::uint8_t* HWY_RESTRICT qc, std::size_t q_bytes,
                                const QueryBlockTerms* HWY_RESTRICT qk, std::size_t n_q, std::size_t n_blocks,
                                const std::uint8_t* HWY_RESTRICT rows, const TileRows& at, std::size_t b,
                                float* HWY_RESTRICT acc) {
  const DF df;
  const DI di;
  const DI8 di8;
  const std::uint8_t* blk = rows + Fmt::kHeader + b * Fmt::kBytes;
  VB k[kGroupWords];  // word j of the group in lane r: row r
  {
    VB row[kLanes][kGroupVecs];
    KVQ_UNROLL
    for (std::size_t r = 0; r < kLanes; ++r) fmt.template Int8Codes<N>(blk + r * at.row_bytes, row[r]);
    KVQ_UNROLL
    for (std::size_t v = 0; v < kGroupVecs; ++v) {
      VB x[kLanes];
      KVQ_UNROLL
      for (std::size_t r = 0; r < kLanes; ++r) x[r] = row[r][v];
      TransposeWords(x);
      KVQ_UNROLL
      for (std::size_t c = 0; c < kLanes; ++c) k[v * kLanes + c] = x[c];
    }
  }
  KVQ_UNROLL
  for (std::size_t nb = 0; nb < N; ++nb) {
    const std::uint8_t* fields = blk + nb * Fmt::kBytes;
    VF d = hn::Zero(df), m = hn::Zero(df);
    if constexpr (!Fmt::kRowScale) d = GatherHalf(fields + Fmt::kScaleAt, at);
    if constexpr (Fmt::kInt8Min) m = GatherHalf(fields + Fmt::kMinAt, at);
    SignedKey sk[8];
    if constexpr (Fmt::kInt8Signed)
      KVQ_UNROLL
      for (std::size_t c = 0; c < 8; ++c) sk[c] = PrepareSigned(hn::BitCast(di8, k[8 * nb + c]));
    for (std::size_t g = 0; g < n_q; ++g) {
      const QueryBlockTerms& qb = qk[g * n_blocks + b + nb];
      const std::uint8_t* codes = qc + g * q_bytes + (b + nb) * kSection;
      VI s = hn::Set(di, qb.bias);
      KVQ_UNROLL
      for (std::size_t c = 0; c < 8; ++c) {
        std::int32_t word;
        std::memcpy(&word, codes + 4 * c, 4);
        const VI8 q4 = hn::BitCast(di8, hn::Set(di, word));
        if constexpr (Fmt::kInt8Signed)
          s = Dot::Signed(sk[c], q4, s);
        else
          s = Dot::Small(k[8 * nb + c], q4, s);
      }
      const VF step = hn::Set(df, qb.step);
      VF a = hn::MulAdd(hn::ConvertTo(df, s), Fmt::kRowScale ? step : hn::Mul(d, step),
                        hn::Load(df, acc + g * kLanes));
      if constexpr (Fmt::kInt8Min) a = hn::MulAdd(m, hn::Set(df, qb.sum), a);
      hn::Store(a, df, acc + g * kLanes);
    }
  }
}

// The tile's rows for queries [0, n_q), n_q <= kTokenLanesMaxGroup.
template <class Fmt, class Dot>
HWY_INLINE void TokenLanesTile(const Fmt& fmt, const std::uint8_t* qc, std::size_t q_bytes, const QueryBlockTerms* qk,
                               std::size_t n_q, std::size_t n_blocks, const std::uint8_t* rows, const TileRows& at,
                               float* out, std::size_t out_stride) {
  const DF df;
  alignas(64) float acc[kTokenLanesMaxGroup * kLanes];
  for (std::size_t g = 0; g < n_q; ++g) hn::Store(hn::Zero(df), df, acc + g * kLanes);
  std::size_t b = 0;
  for (; b + kGroupBlocks <= n_blocks; b += kGroupBlocks)
    TokenLanesGroup<Fmt, Dot, kGroupBlocks>(fmt, qc, q_bytes, qk, n_q, n_blocks, rows, at, b, acc);
  if constexpr (kGroupBlocks == 2)
    if (b < n_blocks) TokenLanesGroup<Fmt, Dot, 1>(fmt, qc, q_bytes, qk, n_q, n_blocks, rows, at, b, acc);
  if constexpr (Fmt::kRowScale) {
    const VF scale = hn::Mul(GatherHalf(rows + Fmt::kRowScaleAt, at), hn::Set(df, fmt.RowScaleFactor()));
    for (std::size_t g = 0; g < n_q; ++g) hn::StoreU(hn::Mul(hn::Load(df, acc + g * kLanes), scale), df, out + g * out_stride);
  } else {
    for (std::size_t g = 0; g < n_q; ++g) hn::StoreU(hn::Load(df, acc + g * kLanes), df, out + g * out_stride);
  }
}

// Rows [0, n_rows / kTokenLanes * kTokenLanes) of every query; returns the
// rows done (none for a single query).
template <class Fmt, class Dot>
HWY_INLINE std::size_t ScoresTokenLanes(const Fmt& fmt, const std::uint8_t* qq, std::size_t n_q, std::size_t q_bytes,
                                        std::size_t sec, const std::uint8_t* rows, std::size_t n_rows,
                                        std::size_t row_bytes, std::size_t n_blocks, float* out,
                                        std::size_t out_stride) {
  const std::size_t n_full = n_rows / kTokenLanes * kTokenLanes;
  if (n_q < kTokenLanesMinGroup || n_full == 0) return 0;
  kvq::detail::Scratch<QueryBlockTerms, 128> consts(n_q * n_blocks);
  QueryBlockTerms* qk = consts.data();
  for (std::size_t g = 0; g < n_q; ++g)
    for (std::size_t b = 0; b < n_blocks; ++b) {
      const std::uint8_t* at = qq + g * q_bytes + b * kSection;
      std::int32_t lanes[8] = {};
      if constexpr (Fmt::kInt8Bias != 0) std::memcpy(lanes, BiasSection<Fmt>(qq + g * q_bytes, sec) + b * kSection, 32);
      QueryBlockTerms& k = qk[g * n_blocks + b];
      k.bias = 0;
      for (std::int32_t l : lanes) k.bias += l;
      std::memcpy(&k.step, at + kStep * sec, 4);
      std::memcpy(&k.sum, at + kSum * sec, 4);
    }
  const TileRows at(row_bytes);
  for (std::size_t t = 0; t < n_full; t += kTokenLanes) {
    const std::uint8_t* r0 = rows + t * row_bytes;
    PrefetchAhead(r0, kTokenLanes * row_bytes);
    for (std::size_t g = 0; g < n_q; g += kTokenLanesMaxGroup) {
      const std::size_t n = n_q - g < kTokenLanesMaxGroup ? n_q - g : kTokenLanesMaxGroup;
      TokenLanesTile<Fmt, Dot>(fmt, qq + kCodes * sec + g * q_bytes, q_bytes, qk + g * n_blocks, n, n_blocks, r0, at,
                               out + g * out_stride + t, out_stride);
    }
  }
  return n_full;
}
#endif  // HWY_TARGET != HWY_SCALAR

// The SCALAR target: the reference's loop, on the queries read back from the
// layout.
template <class Fmt>
HWY_INLINE void ScoresInt8Reference(const Fmt& fmt, const std::uint8_t* qq, std::size_t n_q, std::size_t q_bytes,
                                    std::size_t sec, const std::uint8_t* rows, std::size_t n_rows,
                                    std::size_t row_bytes, std::size_t head_dim, float* out,
                                    std::size_t out_stride) {
  const std::size_t n_blocks = head_dim / 32;
  kvq::detail::Scratch<kvq::reference::Int8QueryBlock, 32> qb(n_blocks);
  for (std::size_t g = 0; g < n_q; ++g) {
    const std::uint8_t* qg = qq + g * q_bytes;
    for (std::size_t b = 0; b < n_blocks; ++b) {
      std::memcpy(&qb.data()[b].d, qg + kStep * sec + b * kSection, 4);
      std::memcpy(&qb.data()[b].sum, qg + kSum * sec + b * kSection, 4);
      std::memcpy(qb.data()[b].c, qg + kCodes * sec + b * kSection, 32);
    }
    for (std::size_t t = 0; t < n_rows; ++t) {
      const std::byte* row = reinterpret_cast<const std::byte*>(rows + t * row_bytes);
      if constexpr (requires { typename Fmt::Reference; })
        out[g * out_stride + t] = kvq::reference::dot_row_int8<typename Fmt::Reference>(qb.data(), row, head_dim);
      else
        out[g * out_stride + t] = fmt.ReferenceRow(qb.data(), row, head_dim);
    }
  }
}

// out[g * out_stride + t] = int8 score of query g (Int8Queries layout at
// `qq`) and row t, for n_q queries and n_rows rows of format Fmt.
template <class Fmt, class Dot = int8_dot::TargetDot>
HWY_INLINE void ScoresInt8(const Fmt& fmt, const std::byte* qq_in, std::size_t n_q, const std::byte* rows_in,
                           std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride) {
  const auto* qq = reinterpret_cast<const std::uint8_t*>(qq_in);
  const auto* rows = reinterpret_cast<const std::uint8_t*>(rows_in);
  const std::size_t n_blocks = head_dim / 32, n_pb = (n_blocks + 1) / 2 * 2, sec = n_pb * kSection;
  const std::size_t q_bytes = Int8Queries::kSections * sec, row_bytes = Fmt::kHeader + n_blocks * Fmt::kBytes;
#if HWY_TARGET != HWY_SCALAR
  std::size_t t = 0;
  if constexpr (KVQ_TOKEN_LANES)
    t = ScoresTokenLanes<Fmt, Dot>(fmt, qq, n_q, q_bytes, sec, rows, n_rows, row_bytes, n_blocks, out, out_stride);
  const Int8ScoresTile<Fmt, Dot> tile{fmt, qq, q_bytes, sec, rows + t * row_bytes, row_bytes, n_blocks, out + t, out_stride};
  ScoresDriver(tile, n_q, rows + t * row_bytes, n_rows - t, row_bytes);
#else
  ScoresInt8Reference(fmt, qq, n_q, q_bytes, sec, rows, n_rows, row_bytes, head_dim, out, out_stride);
#endif
}

}  // namespace int8_query

// int8_query::ScoresInt8 with this target's dot products: NEON with the
// run-time sdot choice (int8_dot-inl.h) has two compiled drivers.
template <class Fmt>
HWY_INLINE void ScoresInt8WithTargetDot(const Fmt& fmt, const std::byte* qq, std::size_t n_q, const std::byte* rows,
                                        std::size_t n_rows, std::size_t head_dim, float* out,
                                        std::size_t out_stride) {
#if HWY_TARGET == HWY_NEON && KVQ_INT8_SDOT_AT_RUN_TIME
  if (::kvq::kernels::cpu::has_sdot())
    return int8_query::ScoresInt8<Fmt, int8_dot::SdotDot>(fmt, qq, n_q, rows, n_rows, head_dim, out, out_stride);
#endif
  int8_query::ScoresInt8<Fmt>(fmt, qq, n_q, rows, n_rows, head_dim, out, out_stride);
}

// Entry point of a uniform format's int8 scores (HWY_EXPORT needs plain functions).
#undef KVQ_INT8_SCORES_ENTRY_POINT
#define KVQ_INT8_SCORES_ENTRY_POINT(NS, FMT)                                                                 \
  inline void ScoresInt8##FMT(const std::byte* qq, std::size_t n_q, const std::byte* rows, std::size_t n_rows, \
                              std::size_t head_dim, float* out, std::size_t out_stride) {                     \
    ScoresInt8WithTargetDot(NS::FMT(), qq, n_q, rows, n_rows, head_dim, out, out_stride);                    \
  }

inline void QuantizeQueriesInt8(const float* q, std::size_t n_q, std::size_t q_stride, std::size_t head_dim,
                                std::byte* out) {
  int8_query::QuantizeQueriesInt8(q, n_q, q_stride, head_dim, out);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_INT8_QUERY_INL_H_
