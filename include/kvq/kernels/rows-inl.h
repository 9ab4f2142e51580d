// The row-kernel drivers shared by every row codec family (uniform blocks,
// turbo codebooks): attention scores and weighted accumulation over a run of
// compressed rows, written once, generic over a *block decoder*.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h and hwy/foreach_target.h); do not include it directly. Every
// function is `inline` because this is a header: each target's copy lives in
// its own namespace (N_AVX2, N_AVX3, ...).
//
// A row is `kHeader` bytes followed by head_dim / kBlock blocks of `kBytes`
// bytes. A decoder turns one block into kBlock / kLanes float vectors; if the
// format has a per-row scale (kRowScale, turbo's alpha), Decode returns the
// unscaled values and RowScale(row) multiplies each row's score or weight
// once, instead of every decoded value. The contract:
//
//   struct Fmt {
//     static constexpr std::size_t kBlock;   // values per block (16 or 32)
//     static constexpr std::size_t kBytes;   // bytes per block
//     static constexpr std::size_t kHeader;  // bytes before a row's first block
//     static constexpr bool kRowScale;
//     float RowScale(const std::uint8_t* row) const;        // if kRowScale
//     void Decode(const std::uint8_t* block, VF* x) const;  // kBlock/kLanes vectors
//   };
//
// Decode attention is memory bound, so the design goal is to spend as few
// instructions as possible per compressed byte:
//  - a block is decoded in registers once and then used by every query of
//    the GQA group (one FMA per query per vector);
//  - scores: tiles of 8 rows (one query) or 4 rows (query pairs/quads) with
//    independent accumulators per (row, query), each 4 rows' accumulators
//    reduced together with a transpose (one interleave tree instead of 4
//    horizontal sums) and stored as 4 adjacent outputs;
//  - accumulate: a tile of rows is swept block by block so the accumulators
//    of that block for a group of queries stay in registers across the tile;
//    the tile's bytes are still in L1 when the next block is swept, so memory
//    sees every compressed byte once. Rows alternate between partial
//    accumulators so FMA latency does not serialize the sweep;
//  - vectors are capped at 16 floats (one AVX-512 register), so a block is a
//    whole number of vectors on every target, and all loads are unaligned.
// Query groups larger than the register budget are processed in sub-groups
// inside each row tile: the tile is re-decoded from L1, never re-read from
// memory. bench/README.md has the measurements behind these choices.

#include <kvq/core/half.hpp>

#include <hwy/cache_control.h>  // hwy::Prefetch (not target-specific)

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(KVQ_KERNELS_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_ROWS_INL_H_
#undef KVQ_KERNELS_ROWS_INL_H_
#else
#define KVQ_KERNELS_ROWS_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace row_kernels {

namespace hn = hwy::HWY_NAMESPACE;

// At most 16 floats: one AVX-512 register.
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;
using DU = hn::RebindToUnsigned<DF>;
using VU = hn::Vec<DU>;
inline constexpr std::size_t kLanes = hn::MaxLanes(DF());

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

// fp16 fields are widened bit-exactly like kvq::half_bits_to_float (the
// reference). In hardware with F16C (AVX2 and up); Highway 1.0.3's emulated
// conversion (SSE4 and below) turns Inf/NaN into finite values, so those
// targets use kvq's scalar conversion.
#if HWY_ARCH_X86 && HWY_TARGET < HWY_SSE4 && !defined(HWY_DISABLE_F16C)
inline constexpr bool kHardwareHalf = true;
#else
inline constexpr bool kHardwareHalf = false;
#endif

// An fp16 field, widened and broadcast. With F16C, broadcasting the 16 bits
// first and widening the whole vector is one instruction fewer than widening
// one lane and broadcasting it.
HWY_INLINE VF LoadHalf(const std::uint8_t* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  if constexpr (kHardwareHalf) {
    const hn::Rebind<hwy::float16_t, DF> d16;
    const hn::Rebind<std::uint16_t, DF> du16;
    return hn::PromoteTo(DF(), hn::BitCast(d16, hn::Set(du16, bits)));
  } else {
    return hn::Set(DF(), kvq::half_bits_to_float(bits));
  }
}

// kLanes fp16 values, widened, lane r from h[r].
HWY_INLINE VF WidenHalves(const std::uint16_t* HWY_RESTRICT h) {
  if constexpr (kHardwareHalf) {
    const hn::Rebind<hwy::float16_t, DF> d16;
    return hn::PromoteTo(DF(), hn::LoadU(d16, reinterpret_cast<const hwy::float16_t*>(h)));
  } else {
    alignas(64) float x[kLanes];
    KVQ_UNROLL
    for (std::size_t r = 0; r < kLanes; ++r) x[r] = kvq::half_bits_to_float(h[r]);
    return hn::Load(DF(), x);
  }
}

HWY_INLINE float LoadHalfScalar(const std::uint8_t* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  return kvq::half_bits_to_float(bits);
}

HWY_INLINE VF CodesToFloat(VU c) { return hn::ConvertTo(DF(), hn::BitCast(hn::RebindToSigned<DF>(), c)); }

// Bit j set in lane j: selects one bit of a packed bit plane per lane.
alignas(64) inline constexpr std::uint32_t kBitOfValue[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

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

template <class Fmt>
inline constexpr std::size_t kVecsPerBlock = Fmt::kBlock / kLanes;

template <class Fmt>
HWY_INLINE float RowScaleOf(const Fmt& fmt, const std::uint8_t* row) {
  if constexpr (Fmt::kRowScale) return fmt.RowScale(row);
  (void)fmt;
  (void)row;
  return 1.0f;
}

// Adds the lanes of each (row, query) sum and stores out[g * out_stride + r]:
// 4 rows at a time with one transpose where R allows.
template <std::size_t R, std::size_t G>
HWY_INLINE void StoreScores(const VF (&sum)[R][G], float* HWY_RESTRICT out, std::size_t out_stride) {
  const DF df;
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

// ---------------------------------------------------------------------------
// Scores: out[g * out_stride + r] = q_g . decode(row r), R rows x G queries.
// S independent accumulators per (row, query) (vectors of a block alternate)
// keep the FMA dependency chains short when R x G alone is small.

template <class Fmt, std::size_t R, std::size_t G>
HWY_INLINE void ScoresTile(const Fmt& fmt, const float* HWY_RESTRICT q, std::size_t q_stride,
                           const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes, std::size_t n_blocks,
                           float* HWY_RESTRICT out, std::size_t out_stride) {
  constexpr std::size_t V = kVecsPerBlock<Fmt>;
  constexpr std::size_t S = (2 * R * G <= kAccBudget && V >= 2) ? 2 : 1;
  const DF df;
  VF acc[R][G][S];
  KVQ_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t s = 0; s < S; ++s) acc[r][g][s] = hn::Zero(df);

  const std::uint8_t* blocks = rows + Fmt::kHeader;
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const float* qb = q + b * Fmt::kBlock;
    KVQ_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      VF x[V];
      fmt.Decode(blocks + r * row_bytes + b * Fmt::kBytes, x);
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g)
        KVQ_UNROLL
        for (std::size_t k = 0; k < V; ++k)
          acc[r][g][k % S] = hn::MulAdd(hn::LoadU(df, qb + g * q_stride + k * kLanes), x[k], acc[r][g][k % S]);
    }
  }

  VF sum[R][G];
  KVQ_UNROLL
  for (std::size_t r = 0; r < R; ++r) {
    const VF scale = hn::Set(df, RowScaleOf(fmt, rows + r * row_bytes));
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      sum[r][g] = acc[r][g][0];
      KVQ_UNROLL
      for (std::size_t s = 1; s < S; ++s) sum[r][g] = hn::Add(sum[r][g], acc[r][g][s]);
      if constexpr (Fmt::kRowScale) sum[r][g] = hn::Mul(sum[r][g], scale);
    }
  }
  StoreScores<R, G>(sum, out, out_stride);
}

// Software prefetch, kPrefetchBytes ahead of the rows being read: a row
// kernel spends enough instructions per cache line that the out-of-order
// window alone keeps too few misses in flight to stream from DRAM (measured:
// cold kernels read ~half the bandwidth a plain sum reaches). Prefetches past
// the end of a run are harmless (they never fault) and cheap.
#ifndef KVQ_PREFETCH_BYTES
#define KVQ_PREFETCH_BYTES 2048
#endif
inline constexpr std::size_t kPrefetchBytes = KVQ_PREFETCH_BYTES;

// Prefetches the cache lines of [p + kPrefetchBytes, p + kPrefetchBytes + n).
HWY_INLINE void PrefetchAhead(const std::uint8_t* p, std::size_t n) {
  if constexpr (kPrefetchBytes > 0)
    for (std::size_t b = 0; b < n; b += 64) hwy::Prefetch(p + kPrefetchBytes + b);
}

// The row loop of every scores kernel (f32 queries here, int8 queries in
// int8_query-inl.h): tiles of 8 rows, prefetching ahead, then 4, then single
// rows; each tile for all n_q queries in sub-groups that fit the register
// budget. Query pairs and quads take the rows 4 at a time; the tile's bytes
// come from L1 after the first sub-group. Tile::Run<R, G>(g, t) scores rows
// [t, t + R) for queries [g, g + G).
template <std::size_t R, class Tile>
HWY_INLINE void ScoresRows(const Tile& tile, std::size_t n_q, std::size_t t) {
  constexpr std::size_t R4 = R < 4 ? R : 4;
  std::size_t g = 0;
  if constexpr (kMaxGroup >= 4)
    for (; g + 4 <= n_q; g += 4)
      for (std::size_t r = 0; r < R; r += R4) tile.template Run<R4, 4>(g, t + r);
  for (; g + 2 <= n_q; g += 2)
    for (std::size_t r = 0; r < R; r += R4) tile.template Run<R4, 2>(g, t + r);
  for (; g < n_q; ++g) tile.template Run<R, 1>(g, t);
}

template <class Tile>
HWY_INLINE void ScoresDriver(const Tile& tile, std::size_t n_q, const std::uint8_t* rows, std::size_t n_rows,
                             std::size_t row_bytes) {
  std::size_t t = 0;
  for (; t + 8 <= n_rows; t += 8) {
    PrefetchAhead(rows + t * row_bytes, 8 * row_bytes);
    ScoresRows<8>(tile, n_q, t);
  }
  for (; t + 4 <= n_rows; t += 4) ScoresRows<4>(tile, n_q, t);
  for (; t < n_rows; ++t) ScoresRows<1>(tile, n_q, t);
}

// f32 queries q + g * q_stride against the rows of `Fmt`.
template <class Fmt>
struct F32ScoresTile {
  const Fmt& fmt;
  const float* q;
  std::size_t q_stride;
  const std::uint8_t* rows;
  std::size_t row_bytes, n_blocks;
  float* out;
  std::size_t out_stride;
  template <std::size_t R, std::size_t G>
  HWY_INLINE void Run(std::size_t g, std::size_t t) const {
    ScoresTile<Fmt, R, G>(fmt, q + g * q_stride, q_stride, rows + t * row_bytes, row_bytes, n_blocks,
                          out + g * out_stride + t, out_stride);
  }
};

template <class Fmt>
HWY_INLINE void Scores(const Fmt& fmt, const float* q, std::size_t n_q, std::size_t q_stride,
                       const std::byte* rows_in, std::size_t n_rows, std::size_t head_dim, float* out,
                       std::size_t out_stride) {
  const auto* rows = reinterpret_cast<const std::uint8_t*>(rows_in);
  const std::size_t n_blocks = head_dim / Fmt::kBlock;
  const std::size_t row_bytes = Fmt::kHeader + n_blocks * Fmt::kBytes;
  const F32ScoresTile<Fmt> tile{fmt, q, q_stride, rows, row_bytes, n_blocks, out, out_stride};
  ScoresDriver(tile, n_q, rows, n_rows, row_bytes);
}

// ---------------------------------------------------------------------------
// Accumulate: acc_g += sum_t w[g * w_stride + t] * decode(row t), G queries,
// P partial accumulators (rows alternate between them).

inline constexpr std::size_t kTileRows = 32;  // x row bytes stays far below L1

template <class Fmt, std::size_t G, std::size_t P>
HWY_INLINE void AccumulateTile(const Fmt& fmt, const float* HWY_RESTRICT w, std::size_t w_stride,
                               const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes,
                               std::size_t n_rows, std::size_t n_blocks, float* HWY_RESTRICT acc,
                               std::size_t acc_stride) {
  constexpr std::size_t V = kVecsPerBlock<Fmt>;
  const DF df;
  // Weights with the row scale folded in, once per tile rather than per block.
  float wt[G][kTileRows];
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g)
    for (std::size_t t = 0; t < n_rows; ++t)
      wt[g][t] = Fmt::kRowScale ? w[g * w_stride + t] * RowScaleOf(fmt, rows + t * row_bytes) : w[g * w_stride + t];

  for (std::size_t b = 0; b < n_blocks; ++b) {
    VF a[P][G][V];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t k = 0; k < V; ++k) {
        a[0][g][k] = hn::LoadU(df, acc + g * acc_stride + b * Fmt::kBlock + k * kLanes);
        KVQ_UNROLL
        for (std::size_t p = 1; p < P; ++p) a[p][g][k] = hn::Zero(df);
      }
    const std::uint8_t* blk = rows + Fmt::kHeader + b * Fmt::kBytes;
    std::size_t t = 0;
    for (; t + P <= n_rows; t += P) {
      KVQ_UNROLL
      for (std::size_t p = 0; p < P; ++p) {
        VF x[V];
        fmt.Decode(blk + (t + p) * row_bytes, x);
        KVQ_UNROLL
        for (std::size_t g = 0; g < G; ++g) {
          const VF wv = hn::Set(df, wt[g][t + p]);
          KVQ_UNROLL
          for (std::size_t k = 0; k < V; ++k) a[p][g][k] = hn::MulAdd(wv, x[k], a[p][g][k]);
        }
      }
    }
    for (; t < n_rows; ++t) {
      VF x[V];
      fmt.Decode(blk + t * row_bytes, x);
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g) {
        const VF wv = hn::Set(df, wt[g][t]);
        KVQ_UNROLL
        for (std::size_t k = 0; k < V; ++k) a[0][g][k] = hn::MulAdd(wv, x[k], a[0][g][k]);
      }
    }
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t k = 0; k < V; ++k) {
        VF s = a[0][g][k];
        KVQ_UNROLL
        for (std::size_t p = 1; p < P; ++p) s = hn::Add(s, a[p][g][k]);
        hn::StoreU(s, df, acc + g * acc_stride + b * Fmt::kBlock + k * kLanes);
      }
  }
}

template <class Fmt>
HWY_INLINE void Accumulate(const Fmt& fmt, const float* w, std::size_t n_q, std::size_t w_stride,
                           const std::byte* rows_in, std::size_t n_rows, std::size_t head_dim, float* acc,
                           std::size_t acc_stride) {
  const auto* rows = reinterpret_cast<const std::uint8_t*>(rows_in);
  const std::size_t n_blocks = head_dim / Fmt::kBlock;
  const std::size_t row_bytes = Fmt::kHeader + n_blocks * Fmt::kBytes;
  // Accumulators (queries x partials) per sweep: kMaxGroup of them.
  constexpr std::size_t kPairs = kMaxGroup;
  for (std::size_t t = 0; t < n_rows; t += kTileRows) {
    const std::size_t tile = n_rows - t < kTileRows ? n_rows - t : kTileRows;
    const std::uint8_t* tile_rows = rows + t * row_bytes;
    PrefetchAhead(tile_rows, tile * row_bytes);
    std::size_t g = 0;
    // Eight queries at once where 8 x V accumulators fit (AVX-512: 32
    // registers, V <= 2): a GQA-8 group decodes each block once, not twice.
    if constexpr (kMaxGroup >= 4 && kVecsPerBlock<Fmt> <= 2)
      for (; g + 8 <= n_q; g += 8)
        AccumulateTile<Fmt, 8, 1>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                  acc + g * acc_stride, acc_stride);
    // Six or three queries in one sweep, so that GQA-3 and GQA-6 groups (and
    // 7 as 6 + 1) decode each block once, not as 4 + 2. Not every size gets
    // its own tile: each is compiled per format and target (issue 14).
    if constexpr (kMaxGroup >= 4 && kVecsPerBlock<Fmt> <= 2) {
      if (n_q - g >= 6) {
        AccumulateTile<Fmt, 6, 1>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                  acc + g * acc_stride, acc_stride);
        g += 6;
      } else if (n_q - g == 3) {
        AccumulateTile<Fmt, 3, 1>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                  acc + g * acc_stride, acc_stride);
        g += 3;
      }
    }
    if constexpr (kMaxGroup >= 4)
      for (; g + 4 <= n_q; g += 4)
        AccumulateTile<Fmt, 4, kPairs / 4>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile,
                                           n_blocks, acc + g * acc_stride, acc_stride);
    for (; g + 2 <= n_q; g += 2)
      AccumulateTile<Fmt, 2, kPairs / 2>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile,
                                         n_blocks, acc + g * acc_stride, acc_stride);
    for (; g < n_q; ++g)
      AccumulateTile<Fmt, 1, kPairs>(fmt, w + g * w_stride + t, w_stride, tile_rows, row_bytes, tile, n_blocks,
                                     acc + g * acc_stride, acc_stride);
  }
}

}  // namespace row_kernels

// Entry points of a row format, one per operation (HWY_EXPORT needs plain
// functions): Scores<FMT> and Accumulate<FMT> running this file's drivers on
// the decoder NS::FMT. Shapes are checked by the dispatch wrappers.
#undef KVQ_ROW_KERNEL_ENTRY_POINTS
#define KVQ_ROW_KERNEL_ENTRY_POINTS(NS, FMT)                                                              \
  inline void Scores##FMT(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* rows,     \
                          std::size_t n_rows, std::size_t head_dim, float* out, std::size_t out_stride) {    \
    row_kernels::Scores(NS::FMT(), q, n_q, q_stride, rows, n_rows, head_dim, out, out_stride);             \
  }                                                                                                        \
  inline void Accumulate##FMT(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows, \
                              std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) { \
    row_kernels::Accumulate(NS::FMT(), w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride);         \
  }

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_ROWS_INL_H_
