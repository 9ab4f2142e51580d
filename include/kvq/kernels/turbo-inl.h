// Highway kernels of the turbo codecs (turbo2 / turbo3 / turbo4): scores and
// weighted accumulation in the rotated space, straight from codebook indices.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The scalar oracle is
// kvq/reference/turbo.hpp: a row is an fp16 scale alpha, then groups of 16
// b-bit indices into a 2^b-entry Lloyd-Max codebook L, and in rotated space
//     q' . row = alpha * sum_i q'_i L[idx_i].
// So a group is one 16-value block for rows-inl.h's drivers (turbo dims are
// multiples of 16, not 32: 80 and 112 occur), Decode yields L[idx] and alpha
// is the row scale, applied once per row (scores) or folded into the weight
// (accumulate), never per value.
//
// Codebook lookup is a lane permutation of a register holding the table: the
// whole 16-entry f32 codebook fits one AVX-512 register (one vpermps); on
// AVX2 a 16-entry table is two 8-lane registers and a blend on index bit 3;
// where the table is wider than two registers (SSE4 and EMU128 with 3 or 4
// bits, SCALAR) it is a gather, which those targets emulate lane by lane.
// The caller passes the codebook padded with zeros to 16 floats.
//
// int8-query scores (int8_query-inl.h's driver, contract in
// reference/int8_query.hpp): two index groups are one 32-value block; the
// indices become bytes in value order and one byte shuffle per 128 bits
// (vpshufb, tbl) looks the int8-rounded codebook up, 16 entries at most; the
// codebook step and alpha scale each row once.

#include <kvq/core/half.hpp>
#include <kvq/reference/int8_query.hpp>  // the int8 scores' SCALAR loop
#include <kvq/reference/turbo.hpp>  // group geometry

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(KVQ_KERNELS_TURBO_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_TURBO_INL_H_
#undef KVQ_KERNELS_TURBO_INL_H_
#else
#define KVQ_KERNELS_TURBO_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace turbo {

using namespace row_kernels;  // DF, VF, DU, VU, kLanes, ...

inline constexpr std::size_t kGroup = kvq::reference::kTurboGroup;
static_assert(kGroup % kLanes == 0, "a group must be whole vectors");

// Per-lane shift that extracts value j of a 2-bit group from its 4 bytes read
// as one little-endian u32: value j is bit pair j / 4 of byte j % 4.
alignas(64) inline constexpr std::uint32_t kCrumbShift[kGroup] = {0,  8,  16, 24, 2,  10, 18, 26,
                                                                  4,  12, 20, 28, 6,  14, 22, 30};

// Indices of values [first, first + kLanes) of a 4-bit group: byte j holds
// value j (low nibble) and value j + 8 (high nibble).
HWY_INLINE VU Indices4(const std::uint8_t* g, std::size_t first) {
  const DU du;
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kLanes == 16) {
    const hn::Half<DU> dh;
    const hn::Rebind<std::uint8_t, decltype(dh)> du8h;
    const auto h = hn::PromoteTo(dh, hn::LoadU(du8h, g));
    return hn::And(hn::Combine(du, hn::ShiftRight<4>(h), h), hn::Set(du, 0xFu));
  } else
#endif
  {
    const hn::Rebind<std::uint8_t, DF> du8;
    const auto v = hn::PromoteTo(du, hn::LoadU(du8, g + first % 8));
    return first < 8 ? hn::And(v, hn::Set(du, 0xFu)) : hn::ShiftRight<4>(v);
  }
}

// Values [first, first + kLanes) of a 2-bit group (also the low plane of a
// 3-bit group).
HWY_INLINE VU Indices2(const std::uint8_t* g, std::size_t first) {
  const DU du;
  if constexpr (kLanes >= 8) {
    std::uint32_t word;
    std::memcpy(&word, g, 4);
    return hn::And(hn::Shr(hn::Set(du, word), hn::LoadU(du, kCrumbShift + first)), hn::Set(du, 3u));
  } else {
    // At most 4 values: contiguous bytes, one shift.
    const hn::Rebind<std::uint8_t, DF> du8;
    const auto v = hn::PromoteTo(du, hn::LoadU(du8, g + first % 4));
    return hn::And(hn::ShiftRightSame(v, static_cast<int>(2 * (first / 4))), hn::Set(du, 3u));
  }
}

// 3 bits: the 2-bit plane, plus bit 2 of value j as bit j of the u16 after it.
HWY_INLINE VU Indices3(const std::uint8_t* g, std::size_t first) {
  const DU du;
  std::uint16_t high;
  std::memcpy(&high, g + 4, 2);
  const auto bit2 = hn::IfThenElseZero(hn::TestBit(hn::Set(du, high), hn::LoadU(du, kBitOfValue + first)),
                                       hn::Set(du, 4u));
  return hn::Or(Indices2(g, first), bit2);
}

// L[idx] for a table of N entries (padded with zeros to at least 16 floats).
template <std::size_t N>
HWY_INLINE VF Lookup(const float* table, VU idx) {
  const DF df;
  const hn::RebindToSigned<DF> di;
#if HWY_TARGET != HWY_SCALAR
  if constexpr (N <= kLanes) {
    return hn::TableLookupLanes(hn::LoadU(df, table), hn::IndicesFromVec(df, hn::BitCast(di, idx)));
  } else if constexpr (N == 2 * kLanes) {
    const auto low = hn::IndicesFromVec(df, hn::BitCast(di, hn::And(idx, hn::Set(DU(), kLanes - 1))));
    const VF lo = hn::TableLookupLanes(hn::LoadU(df, table), low);
    const VF hi = hn::TableLookupLanes(hn::LoadU(df, table + kLanes), low);
    return hn::IfThenElse(hn::RebindMask(df, hn::TestBit(idx, hn::Set(DU(), kLanes))), hi, lo);
  } else
#endif
  {
    return hn::GatherIndex(df, table, hn::BitCast(di, idx));
  }
}

// One turbo format: the rows-inl.h decoder contract (see there).
template <unsigned Bits>
struct Rows {
  static constexpr std::size_t kBlock = kGroup;
  static constexpr std::size_t kBytes = 2 * Bits;
  static constexpr std::size_t kHeader = 2;  // alpha, fp16
  static constexpr bool kRowScale = true;

  const float* table;  // 2^Bits levels, zero-padded to 16 floats

  static HWY_INLINE float RowScale(const std::uint8_t* row) { return LoadHalfScalar(row); }

  HWY_INLINE void Decode(const std::uint8_t* g, VF* x) const {
    KVQ_UNROLL
    for (std::size_t k = 0; k < kGroup / kLanes; ++k) {
      const std::size_t first = k * kLanes;
      if constexpr (Bits == 4) x[k] = Lookup<16>(table, Indices4(g, first));
      if constexpr (Bits == 3) x[k] = Lookup<8>(table, Indices3(g, first));
      if constexpr (Bits == 2) x[k] = Lookup<4>(table, Indices2(g, first));
    }
  }
};

#if HWY_TARGET != HWY_SCALAR
// ---------------------------------------------------------------------------
// int8 side: the indices of a group of N (<= kGroupBlocks) 32-value blocks as
// bytes in value order, kGroupVecs vectors (int8_dot-inl.h's shapes).

// 4 bits, a block of 16 bytes: group h (bytes 8h..8h+7) holds values
// 16h + j (low nibble of byte j) and 16h + 8 + j (high nibble).
template <std::size_t N>
HWY_INLINE void IndexBytes4(const std::uint8_t* blk, int8_dot::VB* v) {
  using namespace int8_dot;
  const DB db;
  const hn::Repartition<std::uint64_t, DB> d64;
  const hn::Repartition<std::uint16_t, DB> d16;
  const VB y = LoadGroupDup128<N>(blk, 8 * 2);
  const VB mask = hn::Set(db, 0x0F);
  const auto lo = hn::BitCast(d64, hn::And(y, mask));
  const auto hi = hn::BitCast(d64, hn::And(hn::BitCast(db, hn::ShiftRight<4>(hn::BitCast(d16, y))), mask));
  const VB first = hn::BitCast(db, hn::InterleaveLower(d64, lo, hi));    // values 0..15 of the block
  const VB second = hn::BitCast(db, hn::InterleaveUpper(d64, lo, hi));  // values 16..31
  if constexpr (kGroupVecs == 1) {
    v[0] = hn::OddEvenBlocks(second, first);  // 128-bit chunks: first, second, (first, second)
  } else {
    v[0] = first;
    v[1] = second;
  }
}

// Per-lane shifts of the 2-bit planes: the u32 lane i of a 128-bit chunk
// holds the group's 4 plane bytes, and bit pair i of each is values 4i..4i+3.
alignas(64) inline constexpr std::uint32_t kPlaneShift[16] = {0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6};

// The 2-bit planes of up to 4 groups as index bytes: plane0/plane1 are the u32
// planes of groups (0, 1) of the first block and (2, 3) of the second, as
// little-endian u64s.
template <std::size_t N>
HWY_INLINE void PlaneBytes(std::uint64_t plane0, std::uint64_t plane1, int8_dot::VB* v) {
  using namespace int8_dot;
  const DB db;
  const hn::Repartition<std::uint32_t, DB> d32;
  const hn::Repartition<std::uint64_t, DB> d64;
  hn::Vec<decltype(d64)> y;
  if constexpr (kGroupBlocks == 2) {
    const hn::Half<decltype(d64)> dh;
    y = hn::Combine(d64, hn::Set(dh, N == 2 ? plane1 : 0), hn::Set(dh, plane0));
  } else {
    (void)plane1;
    y = hn::Set(d64, plane0);
  }
  // Per 128-bit chunk: [w_a, w_b, w_a, w_b]; broadcast w_a or w_b to the chunk.
  const auto words = hn::BitCast(d32, y);
  const auto a = hn::Broadcast<0>(words), b = hn::Broadcast<1>(words);
  const auto shift = hn::LoadU(d32, kPlaneShift);
  const auto mask = hn::Set(d32, 0x03030303u);
  if constexpr (kGroupVecs == 1) {
    v[0] = hn::BitCast(db, hn::And(hn::Shr(hn::OddEvenBlocks(b, a), shift), mask));
  } else {
    v[0] = hn::BitCast(db, hn::And(hn::Shr(a, shift), mask));
    v[1] = hn::BitCast(db, hn::And(hn::Shr(b, shift), mask));
  }
}

HWY_INLINE std::uint64_t TwoPlanes(const std::uint8_t* first, const std::uint8_t* second) {
  std::uint32_t a, b;
  std::memcpy(&a, first, 4);
  std::memcpy(&b, second, 4);
  return a | static_cast<std::uint64_t>(b) << 32;
}

// 2 bits, a block of 8 bytes: the two groups' planes.
template <std::size_t N>
HWY_INLINE void IndexBytes2(const std::uint8_t* blk, int8_dot::VB* v) {
  std::uint64_t p0, p1 = 0;
  std::memcpy(&p0, blk, 8);
  if constexpr (N == 2) std::memcpy(&p1, blk + 8, 8);
  PlaneBytes<N>(p0, p1, v);
}

// 3 bits, a block of 12 bytes: per group a 2-bit plane (4 bytes) and the u16
// of bit 2 (bit j: value j), ORed in as uniform-inl.h's q3_1 high plane.
template <std::size_t N>
HWY_INLINE void IndexBytes3(const std::uint8_t* blk, int8_dot::VB* v) {
  PlaneBytes<N>(TwoPlanes(blk, blk + 6), N == 2 ? TwoPlanes(blk + 12, blk + 18) : 0, v);
  std::uint8_t high[8] = {};
  std::memcpy(high, blk + 4, 2);
  std::memcpy(high + 2, blk + 10, 2);
  if constexpr (N == 2) {
    std::memcpy(high + 4, blk + 16, 2);
    std::memcpy(high + 6, blk + 22, 2);
  }
  uniform::AddHighBits<N>(high, 4, v);
}
#endif  // HWY_TARGET != HWY_SCALAR

// One turbo format's int8 decoder (int8_query-inl.h's contract): blocks of
// two index groups, int8 codebook values, alpha * step per row.
template <unsigned Bits>
struct Int8Rows {
  static constexpr std::size_t kBlock = 2 * kGroup;
  static constexpr std::size_t kBytes = 2 * kvq::reference::turbo_group_bytes(Bits);
  static constexpr std::size_t kHeader = 2;  // alpha, fp16
  static constexpr bool kRowScale = true;
  static constexpr int kInt8Bias = int8_dot::kSignedBias;
  static constexpr bool kInt8Signed = true, kInt8Min = false;

  const std::int8_t* levels;  // 2^Bits int8 levels, zero-padded to 16
  float step;                 // the codebook step s_L

  HWY_INLINE float RowScale(const std::uint8_t* row) const { return LoadHalfScalar(row) * step; }
  // The same as a field and a factor, for the token lanes (int8_query-inl.h).
  static constexpr std::size_t kRowScaleAt = 0;
  HWY_INLINE float RowScaleFactor() const { return step; }

#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) const {
    using namespace int8_dot;
    if constexpr (Bits == 4) IndexBytes4<N>(blk, v);
    if constexpr (Bits == 3) IndexBytes3<N>(blk, v);
    if constexpr (Bits == 2) IndexBytes2<N>(blk, v);
    const VB table = hn::LoadDup128(DB(), reinterpret_cast<const std::uint8_t*>(levels));
    KVQ_UNROLL
    for (std::size_t k = 0; k < kGroupVecs; ++k) v[k] = hn::TableLookupBytes(table, v[k]);
  }
#endif

  float ReferenceRow(const kvq::reference::Int8QueryBlock* qb, const std::byte* row, std::size_t head_dim) const {
    return kvq::reference::turbo_dot_row_int8<Bits>(qb, row, head_dim, levels, step);
  }
};

}  // namespace turbo

// Entry points (HWY_EXPORT needs plain functions). q and acc are in the
// rotated space; shapes are checked by the dispatch wrappers.
#define KVQ_TURBO_KERNELS(BITS)                                                                            \
  inline void ScoresTurbo##BITS(const float* table, const float* q, std::size_t n_q, std::size_t q_stride,  \
                                const std::byte* rows, std::size_t n_rows, std::size_t head_dim, float* out, \
                                std::size_t out_stride) {                                                  \
    row_kernels::Scores(turbo::Rows<BITS>{table}, q, n_q, q_stride, rows, n_rows, head_dim, out, out_stride); \
  }                                                                                                        \
  inline void AccumulateTurbo##BITS(const float* table, const float* w, std::size_t n_q, std::size_t w_stride, \
                                    const std::byte* rows, std::size_t n_rows, std::size_t head_dim,         \
                                    float* acc, std::size_t acc_stride) {                                  \
    row_kernels::Accumulate(turbo::Rows<BITS>{table}, w, n_q, w_stride, rows, n_rows, head_dim, acc,        \
                            acc_stride);                                                                   \
  }
#define KVQ_TURBO_INT8_KERNELS(BITS)                                                                       \
  inline void ScoresInt8Turbo##BITS(const std::int8_t* levels, float step, const std::byte* qq, std::size_t n_q, \
                                    const std::byte* rows, std::size_t n_rows, std::size_t head_dim, float* out, \
                                    std::size_t out_stride) {                                              \
    ScoresInt8WithTargetDot(turbo::Int8Rows<BITS>{levels, step}, qq, n_q, rows, n_rows, head_dim, out,      \
                            out_stride);                                                                   \
  }
// int8 value products (value_products-inl.h; AVX3_DL), else f32 Accumulate.
#define KVQ_TURBO_INT8_ACCUMULATE(BITS)                                                                    \
  inline void AccumulateInt8Turbo##BITS(const float* table, const std::int8_t* levels, float step, const float* w, \
                                        std::size_t n_q, std::size_t w_stride, const std::byte* rows,        \
                                        std::size_t n_rows, std::size_t head_dim, float* acc,                \
                                        std::size_t acc_stride) {                                            \
    value_products::AccumulateInt8(turbo::Int8Rows<BITS>{levels, step}, turbo::Rows<BITS>{table}, w, n_q, w_stride, \
                                   rows, n_rows, head_dim, acc, acc_stride);                                 \
  }
KVQ_TURBO_INT8_ACCUMULATE(2)
KVQ_TURBO_INT8_ACCUMULATE(3)
KVQ_TURBO_INT8_ACCUMULATE(4)
#undef KVQ_TURBO_INT8_ACCUMULATE
KVQ_TURBO_INT8_KERNELS(2)
KVQ_TURBO_INT8_KERNELS(3)
KVQ_TURBO_INT8_KERNELS(4)
#undef KVQ_TURBO_INT8_KERNELS
KVQ_TURBO_KERNELS(2)
KVQ_TURBO_KERNELS(3)
KVQ_TURBO_KERNELS(4)
#undef KVQ_TURBO_KERNELS

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_TURBO_INL_H_
