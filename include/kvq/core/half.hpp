// IEEE 754 binary16 ("half") and bfloat16 conversion, in portable scalar code.
//
// Formats store their scales as fp16 and ggml compatibility depends on the
// exact bits, so float -> half rounds to nearest-even exactly as x86 F16C
// (VCVTPS2PH with imm 0) does: overflow to Inf, subnormal results kept, NaN
// quieted with its sign and top payload bits. half -> float is exact, and a
// signalling NaN comes back quieted, also as F16C does. The tests check this
// against the hardware for all 65,536 halves and a sweep of float bit patterns.
#pragma once

#include <bit>
#include <cstdint>

namespace kvq {

// Bit patterns, not arithmetic types: kvq computes in float and stores 16 bits.
struct Half {
  std::uint16_t bits = 0;
};
struct BFloat16 {
  std::uint16_t bits = 0;
};

constexpr std::uint16_t float_to_half_bits(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7FFFFFFFu;

  if (ax >= 0x7F800000u) {  // Inf or NaN
    if (ax == 0x7F800000u) return sign | 0x7C00u;
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  }
  if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to Inf

  if (ax < 0x38800000u) {  // below 2^-14: the result is a half subnormal or zero
    const std::uint32_t e = ax >> 23;
    if (e < 102) return sign;  // below 2^-25: rounds to zero
    const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // value = (m >> shift) units of 2^-24
    std::uint32_t k = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (k & 1u))) ++k;
    return static_cast<std::uint16_t>(sign | k);
  }

  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits;
  // a carry out of the mantissa correctly bumps the exponent.
  std::uint32_t h = (ax - 0x38000000u) >> 13;
  const std::uint32_t rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

constexpr float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  const std::uint32_t m = h & 0x3FFu;
  if (e == 0) {
    if (m == 0) return std::bit_cast<float>(sign);
    // Subnormal: m * 2^-24, exact in float.
    const float mag = static_cast<float>(m) * 0x1.0p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(mag));
  }
  if (e == 31) {
    if (m == 0) return std::bit_cast<float>(sign | 0x7F800000u);
    return std::bit_cast<float>(sign | 0x7FC00000u | (m << 13));  // quiet NaN
  }
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

constexpr Half to_half(float f) noexcept { return Half{float_to_half_bits(f)}; }
constexpr float to_float(Half h) noexcept { return half_bits_to_float(h.bits); }

// Round-to-nearest-even to bfloat16; NaN stays NaN (quieted), subnormals are kept.
constexpr std::uint16_t float_to_bfloat16_bits(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

constexpr float bfloat16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

constexpr BFloat16 to_bfloat16(float f) noexcept { return BFloat16{float_to_bfloat16_bits(f)}; }
constexpr float to_float(BFloat16 b) noexcept { return bfloat16_bits_to_float(b.bits); }

// The value a float has after a round trip through fp16 (what a stored scale becomes).
constexpr float round_to_half(float f) noexcept { return half_bits_to_float(float_to_half_bits(f)); }

}  // namespace kvq
