// Integer dot products of int8 queries with block codes, per SIMD target:
// the only place where kvq's kernels use target-specific intrinsics, each
// beside the portable Highway form it replaces. Highway 1.0.3 has no int8 dot
// product op.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The int8 score driver is
// rows-inl.h's ScoresInt8; the math and the accuracy contract are in
// kvq/reference/int8_query.hpp.
//
// Shapes. A byte vector VB has 4 bytes per float lane of row_kernels::DF:
// 64 bytes on AVX-512 (two blocks of 32 codes: a "group" of 2 blocks, lanes
// 0-7 belong to the first block, 8-15 to the second), 32 on AVX2 (one block),
// 16 on 128-bit targets (a block is two vectors). Int32 lane i of a dot
// product sums the products of bytes 4i..4i+3 on every path, so it holds
// codes of one block only (a per-lane block scale can be applied before lanes
// are added), or of one token (per-channel tiles).
//
// Dot products:
//   DotSmall(k, q, acc)   acc + sum of k * q, 4 bytes per lane; k unsigned
//                         and at most 127 (the 2..4-bit codes).
//   DotSigned(key, q, acc) the same for signed int8 key codes (q8_0), where
//                         `key` is PrepareSigned(codes), done once per key
//                         block for every query. On VNNI, dpbusd multiplies
//                         unsigned by signed bytes: the key is offset to
//                         c + 128 and acc must start at -128 * (sum of the
//                         lane's 4 query codes) (kSignedBias = 128). With
//                         maddubs (AVX2, AVX-512 without VNNI, SSSE3/SSE4) the
//                         sign moves to the query: |c| * (sign(c) q), which
//                         cannot saturate int16 since |q| <= 127.
// Query codes are in [-127, 127] on every path. TargetDot bundles both for the
// driver (int8_query-inl.h), which is compiled once per dot-product type.
//
// NEON: sdot (ARMv8.2 dot product) is optional, and Highway 1.0.3's NEON
// target is ARMv8.0 (+crypto). Unless the compiler flags already have it
// (__ARM_FEATURE_DOTPROD: DotSmall and DotSigned are sdot), GCC on Linux
// compiles the int8 scores twice, with TargetDot (portable widening) and with
// SdotDot, and the entry point picks one per call from the CPU's
// HWCAP_ASIMDDP bit. Int8DotPath() names the path in use.
#include <kvq/core/half.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(KVQ_KERNELS_INT8_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_INT8_DOT_INL_H_
#undef KVQ_KERNELS_INT8_DOT_INL_H_
#else
#define KVQ_KERNELS_INT8_DOT_INL_H_
#endif

#include <hwy/highway.h>

#if HWY_TARGET == HWY_NEON
#include <arm_neon.h>
#endif

// The run-time sdot choice (see above): the CPU test, once for every copy of
// this header (only NEON uses it).
#if HWY_ARCH_ARM_A64 && !defined(__ARM_FEATURE_DOTPROD) && HWY_COMPILER_GCC_ACTUAL && defined(__linux__)
#ifndef KVQ_INT8_SDOT_AT_RUN_TIME
#define KVQ_INT8_SDOT_AT_RUN_TIME 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // asm/hwcap.h, Linux 4.15+
#endif
namespace kvq::kernels::cpu {
inline bool has_sdot() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
}
}  // namespace kvq::kernels::cpu
#endif
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace int8_dot {

namespace hn = hwy::HWY_NAMESPACE;
using row_kernels::DF;
using row_kernels::VF;
using row_kernels::kLanes;

#if HWY_TARGET != HWY_SCALAR  // SCALAR runs the scalar loop of rows-inl.h

using DB = hn::Repartition<std::uint8_t, DF>;
using VB = hn::Vec<DB>;
using DI8 = hn::RebindToSigned<DB>;
using VI8 = hn::Vec<DI8>;
using DI = hn::RebindToSigned<DF>;
using VI = hn::Vec<DI>;

inline constexpr std::size_t kVecBytes = hn::MaxLanes(DB());
inline constexpr std::size_t kGroupBlocks = kVecBytes >= 64 ? 2 : 1;
inline constexpr std::size_t kGroupVecs = kVecBytes >= 32 ? 1 : 32 / kVecBytes;
static_assert(kGroupBlocks * 32 == kGroupVecs * kVecBytes, "a group is whole blocks and whole vectors");

#undef KVQ_INT8_VNNI
#undef KVQ_INT8_MADDUBS
#if HWY_TARGET == HWY_AVX3_DL
#define KVQ_INT8_VNNI 1
#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
#define KVQ_INT8_MADDUBS 1
#endif

#if !KVQ_INT8_VNNI && !KVQ_INT8_MADDUBS
// Portable form (EMU128, NEON without dotprod, ...): products of even and of
// odd bytes in int16 (each <= 128 * 127, the pair sum fits), then adjacent
// int16 pairs into int32, so lane i sums bytes 4i..4i+3 like the instructions
// (per_channel-inl.h's int8 scores rely on that: a lane is a token there).
HWY_INLINE VI DotPortable(VI8 a, VI8 b, VI acc) {
  const hn::Repartition<std::int16_t, DI8> d16;
  const auto a16 = hn::BitCast(d16, a), b16 = hn::BitCast(d16, b);
  const auto even = hn::Mul(hn::ShiftRight<8>(hn::ShiftLeft<8>(a16)), hn::ShiftRight<8>(hn::ShiftLeft<8>(b16)));
  const auto odd = hn::Mul(hn::ShiftRight<8>(a16), hn::ShiftRight<8>(b16));
  const VI s = hn::BitCast(DI(), hn::Add(even, odd));
  return hn::Add(acc, hn::Add(hn::ShiftRight<16>(s), hn::ShiftRight<16>(hn::ShiftLeft<16>(s))));
}
#endif

#if KVQ_INT8_VNNI
// acc + dpbusd(u, s). Inline assembly because Highway 1.0.3 compiles AVX3_DL
// with GCC's "avxvnni" (the 256-bit VEX form) instead of "avx512vnni", so the
// intrinsic does not compile there, while the target is chosen on CPUs with
// AVX512-VNNI (Ice Lake and later).
HWY_INLINE VI Dpbusd(VI acc, VB u, VI8 s) {
  __m512i a = acc.raw;
  asm("vpdpbusd %2, %1, %0" : "+v"(a) : "v"(u.raw), "vm"(s.raw));
  return VI{a};
}
#endif

#if KVQ_INT8_MADDUBS
// maddubs (u8 x s8 -> pairs summed to int16) then madd with ones (-> int32).
HWY_INLINE VI MaddubsDot(VB u, VI8 s, VI acc) {
#if HWY_TARGET <= HWY_AVX3
  const __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(u.raw, s.raw), _mm512_set1_epi16(1));
#elif HWY_TARGET == HWY_AVX2
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u.raw, s.raw), _mm256_set1_epi16(1));
#else
  const __m128i p = _mm_madd_epi16(_mm_maddubs_epi16(u.raw, s.raw), _mm_set1_epi16(1));
#endif
  return hn::Add(acc, VI{p});
}
#endif

HWY_INLINE VI DotSmall(VB k, VI8 q, VI acc) {
#if KVQ_INT8_VNNI
  return Dpbusd(acc, k, q);
#elif KVQ_INT8_MADDUBS
  return MaddubsDot(k, q, acc);
#elif HWY_TARGET == HWY_NEON && defined(__ARM_FEATURE_DOTPROD)
  return VI{vdotq_s32(acc.raw, vreinterpretq_s8_u8(k.raw), q.raw)};
#else
  return DotPortable(hn::BitCast(DI8(), k), q, acc);
#endif
}

#if KVQ_INT8_VNNI
inline constexpr int kSignedBias = 128;
struct SignedKey {
  VB offset;  // c + 128
};
HWY_INLINE SignedKey PrepareSigned(VI8 c) { return {hn::Xor(hn::BitCast(DB(), c), hn::Set(DB(), 0x80))}; }
HWY_INLINE VI DotSigned(const SignedKey& k, VI8 q, VI acc) {
  return Dpbusd(acc, k.offset, q);
}
#elif KVQ_INT8_MADDUBS
inline constexpr int kSignedBias = 0;
struct SignedKey {
  VB magnitude;  // |c| (128 for -128)
  VI8 codes;
};
HWY_INLINE SignedKey PrepareSigned(VI8 c) { return {hn::BitCast(DB(), hn::Abs(c)), c}; }
HWY_INLINE VI DotSigned(const SignedKey& k, VI8 q, VI acc) {
#if HWY_TARGET <= HWY_AVX3  // no vpsignb on 512 bits: negate q where c < 0
  const __m512i sq = _mm512_mask_sub_epi8(q.raw, _mm512_movepi8_mask(k.codes.raw), _mm512_setzero_si512(), q.raw);
#elif HWY_TARGET == HWY_AVX2
  const __m256i sq = _mm256_sign_epi8(q.raw, k.codes.raw);
#else
  const __m128i sq = _mm_sign_epi8(q.raw, k.codes.raw);
#endif
  return MaddubsDot(k.magnitude, VI8{sq}, acc);
}
#else
inline constexpr int kSignedBias = 0;
struct SignedKey {
  // Written out, not implicit: GCC 12 generates an implicit constructor
  // without the NEON target attribute ("inlining failed ... target specific
  // option mismatch" for arrays of SignedKey).
  HWY_INLINE SignedKey() : codes(hn::Zero(DI8())) {}
  HWY_INLINE explicit SignedKey(VI8 c) : codes(c) {}
  VI8 codes;
};
HWY_INLINE SignedKey PrepareSigned(VI8 c) { return SignedKey(c); }
HWY_INLINE VI DotSigned(const SignedKey& k, VI8 q, VI acc) {
#if HWY_TARGET == HWY_NEON && defined(__ARM_FEATURE_DOTPROD)
  return VI{vdotq_s32(acc.raw, k.codes.raw, q.raw)};
#else
  return DotPortable(k.codes, q, acc);
#endif
}
#endif

// The dot products of this target, for the driver's Dot parameter.
struct TargetDot {
  static HWY_INLINE VI Small(VB k, VI8 q, VI acc) { return DotSmall(k, q, acc); }
  static HWY_INLINE VI Signed(const SignedKey& k, VI8 q, VI acc) { return DotSigned(k, q, acc); }
};

#if HWY_TARGET == HWY_NEON && KVQ_INT8_SDOT_AT_RUN_TIME
// sdot for the run-time choice, with the portable form's SignedKey (the codes)
// and 4 bytes of one block per int32 lane. Inline assembly, as Dpbusd: the
// intrinsic (vdotq_s32) needs an ARMv8.2+dotprod target attribute on every
// function it is inlined into, and GCC 12 then refuses to inline the NEON
// driver's templates into them ("target specific option mismatch"). The
// directive lets the assembler accept sdot in this ARMv8.0 code (binutils
// 2.40 takes +dotprod only on ARMv8.2; it holds to the function's end, which
// GCC compiled for ARMv8.0 + crypto, a subset); the entry point runs it only
// where HWCAP_ASIMDDP says the CPU has it.
HWY_INLINE VI Sdot(VI acc, VI8 a, VI8 b) {
  int32x4_t r = acc.raw;
  asm(".arch armv8.2-a+crypto+dotprod\n\tsdot %0.4s, %1.16b, %2.16b" : "+w"(r) : "w"(a.raw), "w"(b.raw));
  return VI{r};
}
struct SdotDot {
  // Codes of at most 127: the same as signed bytes.
  static HWY_INLINE VI Small(VB k, VI8 q, VI acc) { return Sdot(acc, hn::BitCast(DI8(), k), q); }
  static HWY_INLINE VI Signed(const SignedKey& k, VI8 q, VI acc) { return Sdot(acc, k.codes, q); }
};
#endif

// ---------------------------------------------------------------------------
// Loads of a group of N (<= kGroupBlocks) blocks of one row, block b at
// p + b * stride. A missing second block reads as zeros (never read).

// Vector v of the group: 32 bytes per block.
template <std::size_t N>
HWY_INLINE VB LoadGroup(const std::uint8_t* p, std::size_t stride, std::size_t v) {
  if constexpr (kGroupBlocks == 2) {
    const hn::Half<DB> dh;
    return hn::Combine(DB(), N == 2 ? hn::LoadU(dh, p + stride) : hn::Zero(dh), hn::LoadU(dh, p));
  } else {
    (void)stride;
    return hn::LoadU(DB(), p + v * kVecBytes);
  }
}

// 16 bytes per block, each 128-bit chunk of the result holding one copy
// (chunks 2b and 2b + 1 for block b); on 128-bit targets one copy.
template <std::size_t N>
HWY_INLINE VB LoadGroupDup128(const std::uint8_t* p, std::size_t stride) {
  if constexpr (kGroupBlocks == 2) {
    const hn::Half<DB> dh;
    return hn::Combine(DB(), N == 2 ? hn::LoadDup128(dh, p + stride) : hn::Zero(dh), hn::LoadDup128(dh, p));
  } else if constexpr (kVecBytes == 32) {
    (void)stride;
    return hn::LoadDup128(DB(), p);
  } else {
    (void)stride;
    return hn::LoadU(DB(), p);
  }
}

// Per-lane fp16 block fields: lanes of block b get the field at f + b *
// stride (0 for a missing block); with a minimum the field pair (d, m) at f.
#if HWY_TARGET <= HWY_AVX3
// One conversion of the fields of both blocks, then a lane permutation
// (two broadcasts and an insert otherwise).
HWY_INLINE __m512 SpreadPairs(__m128 f4, int first, int second) {
  return _mm512_permutexvar_ps(_mm512_set_epi32(second, second, second, second, second, second, second, second,
                                                first, first, first, first, first, first, first, first),
                               _mm512_castps128_ps512(f4));
}
template <std::size_t N>
HWY_INLINE VF GroupScale(const std::uint8_t* f, std::size_t stride) {
  std::uint16_t a, b = 0;
  std::memcpy(&a, f, 2);
  if constexpr (N == 2) std::memcpy(&b, f + stride, 2);
  const __m128 f4 = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(a | (static_cast<std::uint32_t>(b) << 16))));
  return VF{SpreadPairs(f4, 0, 1)};
}
template <std::size_t N>
HWY_INLINE void GroupScaleMin(const std::uint8_t* f, std::size_t stride, VF& d, VF& m) {
  std::uint32_t a, b = 0;
  std::memcpy(&a, f, 4);
  if constexpr (N == 2) std::memcpy(&b, f + stride, 4);
  const __m128 f4 = _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(a | (static_cast<std::uint64_t>(b) << 32))));
  d = VF{SpreadPairs(f4, 0, 2)};
  m = VF{SpreadPairs(f4, 1, 3)};
}
#else
template <std::size_t N>
HWY_INLINE VF GroupScale(const std::uint8_t* f, std::size_t) {
  static_assert(N == 1 && kGroupBlocks == 1);
  return row_kernels::LoadHalf(f);
}
template <std::size_t N>
HWY_INLINE void GroupScaleMin(const std::uint8_t* f, std::size_t, VF& d, VF& m) {
  static_assert(N == 1 && kGroupBlocks == 1);
  d = row_kernels::LoadHalf(f);
  m = row_kernels::LoadHalf(f + 2);
}
#endif

#else
inline constexpr int kSignedBias = 0;
struct TargetDot {};  // unused: SCALAR runs the reference's loop
#endif  // HWY_TARGET != HWY_SCALAR

}  // namespace int8_dot

// Which int8 dot product this target's int8 scores use on this CPU.
inline const char* Int8DotPath() {
#if HWY_TARGET == HWY_SCALAR
  return "scalar";
#elif KVQ_INT8_VNNI
  return "vnni";
#elif KVQ_INT8_MADDUBS
  return "maddubs";
#elif HWY_TARGET == HWY_NEON && defined(__ARM_FEATURE_DOTPROD)
  return "sdot";
#elif HWY_TARGET == HWY_NEON && KVQ_INT8_SDOT_AT_RUN_TIME
  return ::kvq::kernels::cpu::has_sdot() ? "sdot" : "neon-widening";
#elif HWY_TARGET == HWY_NEON
  return "neon-widening";
#else
  return "widening";
#endif
}
}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_INT8_DOT_INL_H_
