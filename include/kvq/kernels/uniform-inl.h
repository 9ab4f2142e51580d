// Highway kernels of the uniform block formats (q8_0, q4_0, q4_1, q3_1, q2_1):
// attention scores and weighted accumulation straight from the compressed rows.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h and hwy/foreach_target.h); do not include it directly. Every
// function is `inline` because this is a header: each target's copy lives in
// its own namespace (N_AVX2, N_AVX3, ...) and must not violate the ODR when
// several translation units include it.
//
// The scalar oracle is kvq/reference/uniform.hpp; read it first. The formats
// share one shape, x = d * c + m per block of 32 values, so the kernels are
// written once and each format only says how to turn a block's bytes into
// float vectors of x (a "decoder"). Decode attention is memory bound, so the
// design goal is to spend as few instructions as possible per compressed byte:
//
//  - a block is decoded to x = d * c + m in registers once and then used by
//    every query of the GQA group (one FMA per query per vector). Factoring
//    out the scale (d * sum q c + m * sum q) saves the decode FMA but costs a
//    per-(row, query, block) scale FMA, which loses as soon as a group has
//    more than one query. For a single query it was measured (q4_0/q8_0 on
//    Zen 5, AVX3) and was no faster; neither was a prototype unpacking the
//    nibbles without byte->dword shuffles (broadcast load + per-lane shifts
//    against a permuted query). Rows/s is nearly the same for every format,
//    so the cost is per decoded value and per block (fp16 scale widening,
//    conversions, FMAs), not per byte: the low-bit formats reach a smaller
//    fraction of memory bandwidth. See bench/README.md for the figures.
//  - scores: tiles of 8 rows (one query) or 4 rows (query pairs/quads) with
//    independent accumulators per (row, query), each 4 rows' accumulators
//    reduced together with a transpose (one interleave tree instead of 4
//    horizontal sums) and stored as 4 adjacent outputs.
//  - accumulate: a tile of rows is swept block by block so the accumulators
//    of that block for a group of queries stay in registers across the tile;
//    the tile's bytes are still in L1 when the next block is swept, so memory
//    sees every compressed byte once. Rows alternate between partial
//    accumulators so FMA latency does not serialize the sweep.
//  - vectors are capped at 16 floats (one AVX-512 register = half a block),
//    so a block is 2 (AVX-512), 4 (AVX2), 8 (SSE4/EMU128) or 32 (SCALAR)
//    vectors, and all loads are unaligned.
//
// Query groups larger than the register budget are processed in sub-groups
// inside each row tile: the tile is re-decoded from L1, never re-read from
// memory.

#include <kvq/core/half.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(KVQ_KERNELS_UNIFORM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_UNIFORM_INL_H_
#undef KVQ_KERNELS_UNIFORM_INL_H_
#else
#define KVQ_KERNELS_UNIFORM_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace uniform {

namespace hn = hwy::HWY_NAMESPACE;

// At most 16 floats: half a block per AVX-512 register, so blocks split into
// whole vectors on every target.
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;
inline constexpr std::size_t kLanes = hn::MaxLanes(DF());
inline constexpr std::size_t kBlock = 32;
inline constexpr std::size_t kVecsPerBlock = kBlock / kLanes;
static_assert(kBlock % kLanes == 0, "a block must be whole vectors");

// Loops over registers (rows, queries, vectors of a block) have compile-time
// bounds and must be fully unrolled, or the accumulators live on the stack.
#ifndef KVQ_UNROLL
#define KVQ_UNROLL HWY_UNROLL(32)
#endif

// Register budget: accumulators (rows x queries) per iteration. AVX-512 has 32
// vector registers, the other x86 targets 16.
#if HWY_TARGET <= HWY_AVX3
inline constexpr std::size_t kMaxGroup = 4;
inline constexpr std::size_t kAccBudget = 16;
#else
inline constexpr std::size_t kMaxGroup = 2;
inline constexpr std::size_t kAccBudget = 8;
#endif

// ---------------------------------------------------------------------------
// Block decoders: bytes of one block -> kVecsPerBlock vectors of x = d c + m.

// The fp16 fields are read as bits and widened bit-exactly like
// kvq::half_bits_to_float (the reference). With F16C (AVX2 and up),
// broadcasting the 16 bits first and widening the whole vector is one
// instruction fewer than widening one lane and broadcasting it. Highway
// 1.0.3's emulated conversion (SSE4 and below) turns Inf/NaN into finite
// values, so those targets use kvq's scalar conversion.
HWY_INLINE VF LoadHalf(const std::uint8_t* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
#if HWY_ARCH_X86 && HWY_TARGET < HWY_SSE4 && !defined(HWY_DISABLE_F16C)
  const hn::Rebind<hwy::float16_t, DF> d16;
  const hn::Rebind<std::uint16_t, DF> du16;
  return hn::PromoteTo(DF(), hn::BitCast(d16, hn::Set(du16, bits)));
#else
  return hn::Set(DF(), kvq::half_bits_to_float(bits));
#endif
}

HWY_INLINE VF CodesToFloat(hn::Vec<hn::RebindToUnsigned<DF>> c) {
  const DF df;
  return hn::ConvertTo(df, hn::BitCast(hn::RebindToSigned<DF>(), c));
}

// Codes in ggml's 4-bit order: byte j holds value j (low nibble) and value
// j + 16 (high nibble).
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> Nibbles(const std::uint8_t* qs, std::size_t k) {
  const hn::RebindToUnsigned<DF> du32;
  const hn::Rebind<std::uint8_t, DF> du8;
  const std::size_t first = k * kLanes;  // index of the vector's first value
  const auto v = hn::PromoteTo(du32, hn::LoadU(du8, qs + first % 16));
  return first < 16 ? hn::And(v, hn::Set(du32, 0xFu)) : hn::ShiftRight<4>(v);
}

// Codes of q2_1 and the low two bits of q3_1: byte j (of 8) holds values j,
// j + 8, j + 16, j + 24 in bit pairs 0, 2, 4, 6.
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> Crumbs(const std::uint8_t* qs, std::size_t k) {
  const hn::RebindToUnsigned<DF> du32;
  const std::size_t first = k * kLanes;
#if HWY_TARGET != HWY_SCALAR  // SCALAR has no Combine; it never has 16 lanes
  if constexpr (kLanes == 16) {
    // Values 16k..16k+15 are bit pairs 2k and 2k+1 of the 8 bytes: widen the
    // 8 bytes once and place a copy shifted by 2 in the upper half.
    const hn::Half<decltype(du32)> dh;
    const hn::Rebind<std::uint8_t, decltype(dh)> du8h;
    const auto h = hn::PromoteTo(dh, hn::LoadU(du8h, qs));
    const auto v = hn::Combine(du32, hn::ShiftRight<2>(h), h);
    return hn::And(hn::ShiftRightSame(v, static_cast<int>(4 * k)), hn::Set(du32, 3u));
  } else
#endif
  {
    // A vector of at most 8 values lies within one bit pair.
    const hn::Rebind<std::uint8_t, DF> du8;
    const auto v = hn::PromoteTo(du32, hn::LoadU(du8, qs + first % 8));
    return hn::And(hn::ShiftRightSame(v, static_cast<int>(2 * (first / 8))), hn::Set(du32, 3u));
  }
}

#undef KVQ_UNIFORM_CODES32  // per target
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define KVQ_UNIFORM_CODES32 1
// On 256-bit-capable targets the 32 two-bit codes of a block are unpacked at
// once: the 8 bytes broadcast to four u64 lanes, shifted by 0, 2, 4, 6 and
// masked give codes 0..31 in order as 32 bytes (the "crumb" layout puts value
// j + 8i in bit pair i of byte j). That is 3 instructions for 32 codes
// instead of a widen, shift and mask per vector.
alignas(32) inline constexpr std::uint64_t kCrumbShift[4] = {0, 2, 4, 6};

HWY_INLINE hn::Vec<hn::Full256<std::uint8_t>> Crumbs32(const std::uint8_t* qs) {
  const hn::Full256<std::uint64_t> d64;
  std::uint64_t bits;
  std::memcpy(&bits, qs, 8);
  const auto v = hn::And(hn::Shr(hn::Set(d64, bits), hn::Load(d64, kCrumbShift)),
                         hn::Set(d64, 0x0303030303030303ull));
  return hn::BitCast(hn::Full256<std::uint8_t>(), v);
}

// 32 byte codes -> float vectors.
HWY_INLINE void ExpandCodes(hn::Vec<hn::Full256<std::uint8_t>> c, VF* x) {
  const DF df;
  const hn::RebindToSigned<DF> di32;
  const hn::Full128<std::uint8_t> d128;
  const auto lo = hn::LowerHalf(d128, c), hi = hn::UpperHalf(d128, c);
#if HWY_TARGET != HWY_AVX2
  static_assert(kLanes == 16);
  x[0] = hn::ConvertTo(df, hn::PromoteTo(di32, lo));
  x[1] = hn::ConvertTo(df, hn::PromoteTo(di32, hi));
#else
  static_assert(kLanes == 8);
  {
    const hn::Full64<std::uint8_t> d64;
    x[0] = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LowerHalf(d64, lo)));
    x[1] = hn::ConvertTo(df, hn::PromoteTo(di32, hn::UpperHalf(d64, lo)));
    x[2] = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LowerHalf(d64, hi)));
    x[3] = hn::ConvertTo(df, hn::PromoteTo(di32, hn::UpperHalf(d64, hi)));
  }
#endif
}
#else
#define KVQ_UNIFORM_CODES32 0
#endif

struct Q8_0 {
  static constexpr std::size_t kBytes = 34;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const DF df;
    const hn::RebindToSigned<DF> di32;
    const hn::Rebind<std::int8_t, DF> di8;
    const VF d = LoadHalf(blk);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k)
      x[k] = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di8, reinterpret_cast<const std::int8_t*>(blk + 2 + k * kLanes)))), d);
  }
};

struct Q4_0 {
  static constexpr std::size_t kBytes = 18;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    // c = n - 8 folded into the offset: x = d n + (-8 d).
    const VF d = LoadHalf(blk);
    const VF m = hn::Mul(d, hn::Set(DF(), -8.0f));
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(CodesToFloat(Nibbles(blk + 2, k)), d, m);
  }
};

struct Q4_1 {
  static constexpr std::size_t kBytes = 20;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const VF d = LoadHalf(blk), m = LoadHalf(blk + 2);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(CodesToFloat(Nibbles(blk + 4, k)), d, m);
  }
};

// Bit j of q3_1's high plane is bit 2 of value j.
alignas(64) inline constexpr std::uint32_t kBitOfValue[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

struct Q3_1 {
  static constexpr std::size_t kBytes = 16;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const VF d = LoadHalf(blk), m = LoadHalf(blk + 2);
#if KVQ_UNIFORM_CODES32
    // The high plane is a 32-bit mask, one bit per value: a mask register.
    const hn::Full256<std::uint8_t> d8;
    const auto c = hn::Or(Crumbs32(blk + 4), hn::IfThenElseZero(hn::LoadMaskBits(d8, blk + 12), hn::Set(d8, 4)));
    ExpandCodes(c, x);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(x[k], d, m);
#else
    const hn::RebindToUnsigned<DF> du32;
    std::uint32_t high;
    std::memcpy(&high, blk + 12, 4);
    const auto hv = hn::Set(du32, high);
    const auto four = hn::Set(du32, 4u);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) {
      const auto hi = hn::IfThenElseZero(hn::TestBit(hv, hn::LoadU(du32, kBitOfValue + k * kLanes)), four);
      x[k] = hn::MulAdd(CodesToFloat(hn::Or(Crumbs(blk + 4, k), hi)), d, m);
    }
#endif
  }
};

struct Q2_1 {
  static constexpr std::size_t kBytes = 12;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const VF d = LoadHalf(blk), m = LoadHalf(blk + 2);
#if KVQ_UNIFORM_CODES32
    ExpandCodes(Crumbs32(blk + 4), x);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(x[k], d, m);
#else
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(CodesToFloat(Crumbs(blk + 4, k)), d, m);
#endif
  }
};

// ---------------------------------------------------------------------------
// Horizontal sums (SCALAR, one lane, has no shuffles and needs none).
#if HWY_TARGET != HWY_SCALAR

// Halves a vector until it is one 128-bit block (or narrower).
template <class D>
HWY_INLINE auto FoldTo128(D d, hn::Vec<D> v) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    return FoldTo128(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)));
  } else {
    (void)d;
    return v;
  }
}

// {sum(a), sum(b), sum(c), sum(e)} as a 4-lane vector: a transpose within
// each 128-bit block, then the blocks are added.
HWY_INLINE auto Sum4(VF a, VF b, VF c, VF e) {
  const DF df;
  const hn::Repartition<std::uint64_t, DF> d64;
  const VF ab = hn::Add(hn::InterleaveLower(df, a, b), hn::InterleaveUpper(df, a, b));  // a02 b02 a13 b13
  const VF ce = hn::Add(hn::InterleaveLower(df, c, e), hn::InterleaveUpper(df, c, e));
  const VF lo = hn::BitCast(df, hn::InterleaveLower(d64, hn::BitCast(d64, ab), hn::BitCast(d64, ce)));
  const VF hi = hn::BitCast(df, hn::InterleaveUpper(d64, hn::BitCast(d64, ab), hn::BitCast(d64, ce)));
  return FoldTo128(df, hn::Add(lo, hi));
}
#endif  // HWY_TARGET != HWY_SCALAR

// ---------------------------------------------------------------------------
// Scores: out[g * out_stride + r] = q_g . decode(row r), R rows x G queries.
// S independent accumulators per (row, query) (vectors of a block alternate)
// keep the FMA dependency chains short when R x G alone is small.

template <class Fmt, std::size_t R, std::size_t G>
HWY_INLINE void ScoresTile(const float* HWY_RESTRICT q, std::size_t q_stride,
                           const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes, std::size_t n_blocks,
                           float* HWY_RESTRICT out, std::size_t out_stride) {
  constexpr std::size_t S = (2 * R * G <= kAccBudget && kVecsPerBlock >= 2) ? 2 : 1;
  const DF df;
  VF acc[R][G][S];
  KVQ_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t s = 0; s < S; ++s) acc[r][g][s] = hn::Zero(df);

  for (std::size_t b = 0; b < n_blocks; ++b) {
    const float* qb = q + b * kBlock;
    KVQ_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      VF x[kVecsPerBlock];
      Fmt::Decode(rows + r * row_bytes + b * Fmt::kBytes, x);
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g)
        KVQ_UNROLL
        for (std::size_t k = 0; k < kVecsPerBlock; ++k)
          acc[r][g][k % S] = hn::MulAdd(hn::LoadU(df, qb + g * q_stride + k * kLanes), x[k], acc[r][g][k % S]);
    }
  }

  VF sum[R][G];
  KVQ_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      sum[r][g] = acc[r][g][0];
      KVQ_UNROLL
      for (std::size_t s = 1; s < S; ++s) sum[r][g] = hn::Add(sum[r][g], acc[r][g][s]);
    }
#if HWY_TARGET != HWY_SCALAR
  if constexpr (R % 4 == 0) {
    const hn::CappedTag<float, 4> d4;
    KVQ_UNROLL
    for (std::size_t r = 0; r < R; r += 4)
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g)
        hn::StoreU(Sum4(sum[r][g], sum[r + 1][g], sum[r + 2][g], sum[r + 3][g]), d4, out + g * out_stride + r);
  } else
#endif
  {
    KVQ_UNROLL
    for (std::size_t r = 0; r < R; ++r)
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g) out[g * out_stride + r] = hn::GetLane(hn::SumOfLanes(df, sum[r][g]));
  }
}

// Rows [0, R) for all n_q queries, in sub-groups that fit the register budget.
// Query pairs and quads take the rows 4 at a time; the tile's bytes come from
// L1 after the first sub-group.
template <class Fmt, std::size_t R>
HWY_INLINE void ScoresRows(const float* q, std::size_t n_q, std::size_t q_stride, const std::uint8_t* rows,
                           std::size_t row_bytes, std::size_t n_blocks, float* out, std::size_t out_stride) {
  constexpr std::size_t R4 = R < 4 ? R : 4;
  std::size_t g = 0;
  if constexpr (kMaxGroup >= 4)
    for (; g + 4 <= n_q; g += 4)
      for (std::size_t r = 0; r < R; r += R4)
        ScoresTile<Fmt, R4, 4>(q + g * q_stride, q_stride, rows + r * row_bytes, row_bytes, n_blocks,
                               out + g * out_stride + r, out_stride);
  for (; g + 2 <= n_q; g += 2)
    for (std::size_t r = 0; r < R; r += R4)
      ScoresTile<Fmt, R4, 2>(q + g * q_stride, q_stride, rows + r * row_bytes, row_bytes, n_blocks,
                             out + g * out_stride + r, out_stride);
  for (; g < n_q; ++g)
    ScoresTile<Fmt, R, 1>(q + g * q_stride, q_stride, rows, row_bytes, n_blocks, out + g * out_stride, out_stride);
}

template <class Fmt>
HWY_INLINE void Scores(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* rows_in,
                       std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride) {
  const auto* rows = reinterpret_cast<const std::uint8_t*>(rows_in);
  const std::size_t n_blocks = head_dim / kBlock;
  const std::size_t row_bytes = n_blocks * Fmt::kBytes;
  std::size_t t = 0;
  for (; t + 8 <= n_rows; t += 8)
    ScoresRows<Fmt, 8>(q, n_q, q_stride, rows + t * row_bytes, row_bytes, n_blocks, out + t, out_stride);
  for (; t + 4 <= n_rows; t += 4)
    ScoresRows<Fmt, 4>(q, n_q, q_stride, rows + t * row_bytes, row_bytes, n_blocks, out + t, out_stride);
  for (; t < n_rows; ++t)
    ScoresRows<Fmt, 1>(q, n_q, q_stride, rows + t * row_bytes, row_bytes, n_blocks, out + t, out_stride);
}

// ---------------------------------------------------------------------------
// Accumulate: acc_g += sum_t w[g * w_stride + t] * decode(row t), G queries,
// P partial accumulators (rows alternate between them).

inline constexpr std::size_t kTileRows = 32;  // x row bytes stays far below L1

template <class Fmt, std::size_t G, std::size_t P>
HWY_INLINE void AccumulateTile(const float* HWY_RESTRICT w, std::size_t w_stride,
                               const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes,
                               std::size_t n_rows, std::size_t n_blocks, float* HWY_RESTRICT acc,
                               std::size_t acc_stride) {
  const DF df;
  for (std::size_t b = 0; b < n_blocks; ++b) {
    VF a[P][G][kVecsPerBlock];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t k = 0; k < kVecsPerBlock; ++k) {
        a[0][g][k] = hn::LoadU(df, acc + g * acc_stride + b * kBlock + k * kLanes);
        KVQ_UNROLL
        for (std::size_t p = 1; p < P; ++p) a[p][g][k] = hn::Zero(df);
      }
    const std::uint8_t* blk = rows + b * Fmt::kBytes;
    std::size_t t = 0;
    for (; t + P <= n_rows; t += P) {
      KVQ_UNROLL
      for (std::size_t p = 0; p < P; ++p) {
        VF x[kVecsPerBlock];
        Fmt::Decode(blk + (t + p) * row_bytes, x);
        KVQ_UNROLL
        for (std::size_t g = 0; g < G; ++g) {
          const VF wv = hn::Set(df, w[g * w_stride + t + p]);
          KVQ_UNROLL
          for (std::size_t k = 0; k < kVecsPerBlock; ++k) a[p][g][k] = hn::MulAdd(wv, x[k], a[p][g][k]);
        }
      }
    }
    for (; t < n_rows; ++t) {
      VF x[kVecsPerBlock];
      Fmt::Decode(blk + t * row_bytes, x);
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g) {
        const VF wv = hn::Set(df, w[g * w_stride + t]);
        KVQ_UNROLL
        for (std::size_t k = 0; k < kVecsPerBlock; ++k) a[0][g][k] = hn::MulAdd(wv, x[k], a[0][g][k]);
      }
    }
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t k = 0; k < kVecsPerBlock; ++k) {
        VF s = a[0][g][k];
        KVQ_UNROLL
        for (std::size_t p = 1; p < P; ++p) s = hn::Add(s, a[p][g][k]);
        hn::StoreU(s, df, acc + g * acc_stride + b * kBlock + k * kLanes);
      }
  }
}

template <class Fmt>
HWY_INLINE void Accumulate(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows_in,
                           std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) {
  const auto* rows = reinterpret_cast<const std::uint8_t*>(rows_in);
  const std::size_t n_blocks = head_dim / kBlock;
  const std::size_t row_bytes = n_blocks * Fmt::kBytes;
  // Accumulators (queries x partials) per sweep: kMaxGroup of them.
  constexpr std::size_t kPairs = kMaxGroup;
  for (std::size_t t = 0; t < n_rows; t += kTileRows) {
    const std::size_t tile = n_rows - t < kTileRows ? n_rows - t : kTileRows;
    const std::uint8_t* tile_rows = rows + t * row_bytes;
    std::size_t g = 0;
    if constexpr (kMaxGroup >= 4)
      for (; g + 4 <= n_q; g += 4)
        AccumulateTile<Fmt, 4, kPairs / 4>(w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                           acc + g * acc_stride, acc_stride);
    for (; g + 2 <= n_q; g += 2)
      AccumulateTile<Fmt, 2, kPairs / 2>(w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                         acc + g * acc_stride, acc_stride);
    for (; g < n_q; ++g)
      AccumulateTile<Fmt, 1, kPairs>(w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                     acc + g * acc_stride, acc_stride);
  }
}

}  // namespace uniform

// Entry points, one per format and operation (HWY_EXPORT needs plain
// functions). Shapes are checked by the dispatch wrappers.
#define KVQ_UNIFORM_KERNELS(FMT)                                                                        \
  inline void Scores##FMT(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* rows,  \
                          std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride) { \
    uniform::Scores<uniform::FMT>(q, n_q, q_stride, rows, n_rows, head_dim, out, out_stride);           \
  }                                                                                                     \
  inline void Accumulate##FMT(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows, \
                              std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) { \
    uniform::Accumulate<uniform::FMT>(w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride);       \
  }
KVQ_UNIFORM_KERNELS(Q8_0)
KVQ_UNIFORM_KERNELS(Q4_0)
KVQ_UNIFORM_KERNELS(Q4_1)
KVQ_UNIFORM_KERNELS(Q3_1)
KVQ_UNIFORM_KERNELS(Q2_1)
#undef KVQ_UNIFORM_KERNELS

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_UNIFORM_INL_H_
