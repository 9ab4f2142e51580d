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

#include <kvq/core/half.hpp>
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
KVQ_TURBO_KERNELS(2)
KVQ_TURBO_KERNELS(3)
KVQ_TURBO_KERNELS(4)
#undef KVQ_TURBO_KERNELS

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_TURBO_INL_H_
