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
// share one shape, x = d * c + m per block of 32 values, so each format only
// says how to turn a block's bytes into float vectors of x (a "decoder"); the
// scores/accumulate drivers are rows-inl.h's, shared with the turbo codecs.
//
// Why decode to x = d * c + m rather than factor the scale out
// (d * sum q c + m * sum q): that saves the decode FMA but costs a per-(row,
// query, block) scale FMA, which loses as soon as a GQA group has more than
// one query. For a single query it was measured (q4_0/q8_0 on Zen 5, AVX3) and
// was no faster; neither was a prototype unpacking the nibbles without
// byte->dword shuffles (broadcast load + per-lane shifts against a permuted
// query). Rows/s is nearly the same for every format, so the cost is per
// decoded value and per block (fp16 scale widening, conversions, FMAs), not
// per byte: the low-bit formats reach a smaller fraction of memory bandwidth.
// See bench/README.md for the figures.

#include <kvq/core/half.hpp>
#include <kvq/reference/uniform.hpp>  // the int8 scores' SCALAR loop

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

using namespace row_kernels;  // DF, VF, kLanes, LoadHalf, CodesToFloat, ...

inline constexpr std::size_t kBlock = 32;
inline constexpr std::size_t kVecsPerBlock = kBlock / kLanes;
static_assert(kBlock % kLanes == 0, "a block must be whole vectors");

// Uniform rows are bare blocks: no row header, no row scale.
struct Blocks {
  static constexpr std::size_t kBlock = 32;
  static constexpr std::size_t kHeader = 0;
  static constexpr bool kRowScale = false;
  // Where a block's fp16 scale d and (formats with a minimum) m are: the
  // token-lanes int8 scores gather them (int8_query-inl.h).
  static constexpr std::size_t kScaleAt = 0, kMinAt = 2;
};

// ---------------------------------------------------------------------------
// Block decoders: bytes of one block -> kVecsPerBlock vectors of x = d c + m.

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

#if HWY_TARGET != HWY_SCALAR
// int8 side (int8_query-inl.h): the 32 nibble codes of each block of a group
// as bytes, values in order (low nibbles are values 0..15, high 16..31).
template <std::size_t N>
HWY_INLINE void NibbleBytes(const std::uint8_t* qs, std::size_t stride, int8_dot::VB* v) {
  using namespace int8_dot;
  const DB db;
  const hn::Repartition<std::uint16_t, DB> d16;
  const VB y = LoadGroupDup128<N>(qs, stride);
  const VB hi = hn::BitCast(db, hn::ShiftRight<4>(hn::BitCast(d16, y)));
  const VB mask = hn::Set(db, 0x0F);
  if constexpr (kGroupVecs == 1) {
    v[0] = hn::And(hn::OddEvenBlocks(hi, y), mask);  // 128-bit chunks: low, high, (low, high)
  } else {
    v[0] = hn::And(y, mask);
    v[1] = hn::And(hi, mask);
  }
}
#endif

// The formats with a minimum (q4_1, q3_1, q2_1): d and m (fp16) open every
// block; the int8 side adds m * sum(q) per block.
template <std::size_t Bytes>
struct MinBlocks : Blocks {
  static constexpr std::size_t kBytes = Bytes;
  static constexpr int kInt8Bias = 0;
  static constexpr bool kInt8Signed = false, kInt8Min = true;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Scales(const std::uint8_t* blk, VF& d, VF& m) {
    int8_dot::GroupScaleMin<N>(blk, Bytes, d, m);
  }
#endif
};

struct Q8_0 : Blocks {
  static constexpr std::size_t kBytes = 34;
  static constexpr std::size_t kSignedCodes = 2;  // offset of the 32 int8 codes (value_products-inl.h)
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const DF df;
    const hn::RebindToSigned<DF> di32;
    const hn::Rebind<std::int8_t, DF> di8;
    const VF d = LoadHalf(blk);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k)
      x[k] = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di8, reinterpret_cast<const std::int8_t*>(blk + 2 + k * kLanes)))), d);
  }
  using Reference = kvq::reference::Q8_0Block;
  static constexpr int kInt8Bias = int8_dot::kSignedBias;
  static constexpr bool kInt8Signed = true, kInt8Min = false;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) {
    KVQ_UNROLL
    for (std::size_t k = 0; k < int8_dot::kGroupVecs; ++k) v[k] = int8_dot::LoadGroup<N>(blk + 2, kBytes, k);
  }
  template <std::size_t N>
  static HWY_INLINE void Int8Scales(const std::uint8_t* blk, VF& d, VF& m) {
    d = int8_dot::GroupScale<N>(blk, kBytes);
    m = hn::Zero(DF());
  }
#endif
};

struct Q4_0 : Blocks {
  static constexpr std::size_t kBytes = 18;
  static constexpr std::size_t kNibbleCodes = 2;  // offset of the 16 code bytes (value_products-inl.h)
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    // c = n - 8 folded into the offset: x = d n + (-8 d).
    const VF d = LoadHalf(blk);
    const VF m = hn::Mul(d, hn::Set(DF(), -8.0f));
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(CodesToFloat(Nibbles(blk + 2, k)), d, m);
  }
  // int8: codes n in 0..15 with c = n - 8 kept in the integer sum (bias8).
  using Reference = kvq::reference::Q4_0Block;
  static constexpr int kInt8Bias = 8;
  static constexpr bool kInt8Signed = false, kInt8Min = false;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) {
    NibbleBytes<N>(blk + 2, kBytes, v);
  }
  template <std::size_t N>
  static HWY_INLINE void Int8Scales(const std::uint8_t* blk, VF& d, VF& m) {
    d = int8_dot::GroupScale<N>(blk, kBytes);
    m = hn::Zero(DF());
  }
#endif
};

struct Q4_1 : MinBlocks<20> {
  static constexpr std::size_t kNibbleCodes = 4;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const VF d = LoadHalf(blk), m = LoadHalf(blk + 2);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kVecsPerBlock; ++k) x[k] = hn::MulAdd(CodesToFloat(Nibbles(blk + 4, k)), d, m);
  }
  using Reference = kvq::reference::Q4_1Block;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) {
    NibbleBytes<N>(blk + 4, kBytes, v);
  }
#endif
};

#if HWY_TARGET != HWY_SCALAR
// int8 side: q2_1's crumb codes (q3_1's low two bits) of each block of a
// group as bytes, values in order.
template <std::size_t N>
HWY_INLINE void CrumbBytes(const std::uint8_t* qs, std::size_t stride, int8_dot::VB* v) {
  using namespace int8_dot;
#if KVQ_UNIFORM_CODES32 && HWY_TARGET <= HWY_AVX3  // two blocks per vector
  v[0] = hn::Combine(DB(), N == 2 ? Crumbs32(qs + stride) : hn::Zero(hn::Half<DB>()), Crumbs32(qs));
#elif KVQ_UNIFORM_CODES32
  (void)stride;
  v[0] = Crumbs32(qs);
#else
  // 16 values per vector: values 16k..16k+7 are bit pair 2k of the 8 bytes,
  // 16k+8..16k+15 bit pair 2k+1.
  static_assert(kVecBytes == 16);
  (void)stride;
  const hn::Repartition<std::uint64_t, DB> d64;
  std::uint64_t bits;
  std::memcpy(&bits, qs, 8);
  const auto x = hn::Set(d64, bits);
  KVQ_UNROLL
  for (std::size_t k = 0; k < kGroupVecs; ++k) {
    const auto lo = hn::ShiftRightSame(x, static_cast<int>(4 * k)), hi = hn::ShiftRightSame(x, static_cast<int>(4 * k + 2));
    v[k] = hn::And(hn::BitCast(DB(), hn::ConcatUpperLower(d64, hi, lo)), hn::Set(DB(), 3));
  }
#endif
}

// q3_1's high plane (bit j of a little-endian u32 is bit 2 of value j) ORed
// into the bytes of CrumbBytes.
template <std::size_t N>
HWY_INLINE void AddHighBits(const std::uint8_t* high, std::size_t stride, int8_dot::VB* v) {
  using namespace int8_dot;
  const DB db;
  const VB four = hn::Set(db, 4);
  if constexpr (kGroupBlocks == 2) {
    std::uint8_t bits[8] = {};
    std::memcpy(bits, high, 4);
    if constexpr (N == 2) std::memcpy(bits + 4, high + stride, 4);
    v[0] = hn::Or(v[0], hn::IfThenElseZero(hn::LoadMaskBits(db, bits), four));
  } else {
    (void)stride;
    KVQ_UNROLL
    for (std::size_t k = 0; k < kGroupVecs; ++k)
      v[k] = hn::Or(v[k], hn::IfThenElseZero(hn::LoadMaskBits(db, high + k * kVecBytes / 8), four));
  }
}
#endif

// Bit j of q3_1's high plane is bit 2 of value j (row_kernels::kBitOfValue).
struct Q3_1 : MinBlocks<16> {
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
  using Reference = kvq::reference::Q3_1Block;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) {
    CrumbBytes<N>(blk + 4, kBytes, v);
    AddHighBits<N>(blk + 12, kBytes, v);
  }
#endif
};

struct Q2_1 : MinBlocks<12> {
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
  using Reference = kvq::reference::Q2_1Block;
#if HWY_TARGET != HWY_SCALAR
  template <std::size_t N>
  static HWY_INLINE void Int8Codes(const std::uint8_t* blk, int8_dot::VB* v) {
    CrumbBytes<N>(blk + 4, kBytes, v);
  }
#endif
};

}  // namespace uniform

// Entry points (rows-inl.h's macro): ScoresQ8_0, AccumulateQ8_0, ...
KVQ_ROW_KERNEL_ENTRY_POINTS(uniform, Q8_0)
KVQ_ROW_KERNEL_ENTRY_POINTS(uniform, Q4_0)
KVQ_ROW_KERNEL_ENTRY_POINTS(uniform, Q4_1)
KVQ_ROW_KERNEL_ENTRY_POINTS(uniform, Q3_1)
KVQ_ROW_KERNEL_ENTRY_POINTS(uniform, Q2_1)
// int8-query scores (int8_query-inl.h's macro): ScoresInt8Q8_0, ...
KVQ_INT8_SCORES_ENTRY_POINT(uniform, Q8_0)
KVQ_INT8_SCORES_ENTRY_POINT(uniform, Q4_0)
KVQ_INT8_SCORES_ENTRY_POINT(uniform, Q4_1)
KVQ_INT8_SCORES_ENTRY_POINT(uniform, Q3_1)
KVQ_INT8_SCORES_ENTRY_POINT(uniform, Q2_1)

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_UNIFORM_INL_H_
