// Scalar reference of the turbo formats (turbo2 / turbo3 / turbo4; turbo1 for
// measurements): the oracle for the SIMD kernels and the text to read when
// porting one.
//
// A turbo row of head_dim d stores a vector x as
//
//     y = R x                       R: the codec's seeded rotation (rotation.hpp)
//     idx_i = Q(sqrt(d) * y_i / |x|) Q: nearest level of the b-bit Lloyd-Max
//                                      codebook L of the sphere distribution
//     alpha = |x| / |L[idx]|        norm-corrected scale, stored as fp16
//
// and decodes, *in rotated space*, to  y_i ~ alpha * L[idx_i]; the model-space
// vector is R^-1 of that. alpha = |x| / |L[idx]| makes the reconstruction's
// norm equal |x| (up to fp16 rounding of alpha): docs/QUALITY.md ("Turbo
// codecs") has the measurements that chose it over storing |x| itself.
//
// Attention never leaves rotated space: R is orthonormal, so
//     q . x^ = (R q) . (alpha L[idx]) = alpha * sum_i q'_i L[idx_i]
// and a weighted sum of values is accumulated as alpha*w*L[idx] and rotated
// back once. Everything below therefore works on rotated vectors; the codec
// (codec/turbo.hpp) applies R before encoding and R^-1 after decoding.
//
// Byte layout (little-endian, docs/FORMATS.md "Turbo"), head_dim a multiple of
// 16, coordinates cut into groups of 16 (g = 0 .. d/16-1), coordinate j of
// group g being rotated coordinate 16g + j:
//   [alpha: fp16] then, per group, 2*bits bytes of indices:
//   4 bits: 8 bytes, byte j = idx_j | idx_{j+8} << 4
//   3 bits: 4 bytes low plane (as 2 bits, of idx & 3), then a u16 whose bit j
//           is bit 2 of idx_j
//   2 bits: 4 bytes, byte j = idx_j | idx_{j+4} << 2 | idx_{j+8} << 4 | idx_{j+12} << 6
//   1 bit:  a u16 whose bit j is idx_j
// Index k means the k-th level in ascending order (0 = most negative).
#pragma once

#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvq::reference {

inline constexpr std::size_t kTurboGroup = 16;

// Bytes of one group of 16 indices at `bits` per index.
constexpr std::size_t turbo_group_bytes(unsigned bits) noexcept { return 2 * bits; }
// Bytes of one row: fp16 scale + d/16 groups.
constexpr std::size_t turbo_row_bytes(unsigned bits, std::size_t dim) noexcept {
  return 2 + dim / kTurboGroup * turbo_group_bytes(bits);
}

// Pack 16 indices (each < 2^bits) into one group.
template <unsigned Bits>
void turbo_pack_group(const std::uint8_t* idx, std::byte* out) noexcept {
  static_assert(Bits >= 1 && Bits <= 4);
  if constexpr (Bits == 4) {
    for (std::size_t j = 0; j < 8; ++j) out[j] = static_cast<std::byte>((idx[j] & 15) | (idx[j + 8] & 15) << 4);
  } else if constexpr (Bits == 1) {
    std::uint16_t plane = 0;
    for (std::size_t j = 0; j < 16; ++j) plane |= static_cast<std::uint16_t>((idx[j] & 1u) << j);
    bits::store_u16(out, plane);
  } else {
    for (std::size_t j = 0; j < 4; ++j)
      out[j] = static_cast<std::byte>((idx[j] & 3) | (idx[j + 4] & 3) << 2 | (idx[j + 8] & 3) << 4 |
                                      (idx[j + 12] & 3) << 6);
    if constexpr (Bits == 3) {
      std::uint16_t high = 0;
      for (std::size_t j = 0; j < 16; ++j) high |= static_cast<std::uint16_t>(((idx[j] >> 2) & 1u) << j);
      bits::store_u16(out + 4, high);
    }
  }
}

// Unpack one group into 16 indices.
template <unsigned Bits>
void turbo_unpack_group(const std::byte* in, std::uint8_t* idx) noexcept {
  static_assert(Bits >= 1 && Bits <= 4);
  if constexpr (Bits == 4) {
    for (std::size_t j = 0; j < 8; ++j) {
      const unsigned b = bits::byte_at(in, j);
      idx[j] = static_cast<std::uint8_t>(b & 15);
      idx[j + 8] = static_cast<std::uint8_t>(b >> 4);
    }
  } else if constexpr (Bits == 1) {
    const unsigned plane = bits::load_u16(in);
    for (std::size_t j = 0; j < 16; ++j) idx[j] = static_cast<std::uint8_t>((plane >> j) & 1u);
  } else {
    for (std::size_t j = 0; j < 16; ++j)
      idx[j] = static_cast<std::uint8_t>((bits::byte_at(in, j % 4) >> (2 * (j / 4))) & 3u);
    if constexpr (Bits == 3) {
      const unsigned high = bits::load_u16(in + 4);
      for (std::size_t j = 0; j < 16; ++j) idx[j] = static_cast<std::uint8_t>(idx[j] | ((high >> j) & 1u) << 2);
    }
  }
}

// Index of the level nearest to u, given the 2^Bits - 1 ascending midpoints
// between consecutive levels: the number of midpoints strictly below u.
template <unsigned Bits>
std::uint8_t turbo_quantize(float u, const float* thresholds) noexcept {
  unsigned k = 0;
  for (std::size_t t = 0; t + 1 < (std::size_t{1} << Bits); ++t) k += u > thresholds[t];
  return static_cast<std::uint8_t>(k);
}

// Indices of a rotated vector y of norm `norm` > 0: idx_i = Q(sqrt(d) y_i / norm).
template <unsigned Bits>
void turbo_indices(const float* y, double norm, std::size_t dim, const float* thresholds,
                   std::uint8_t* idx) noexcept {
  const double to_unit_variance = std::sqrt(static_cast<double>(dim)) / norm;
  for (std::size_t i = 0; i < dim; ++i)
    idx[i] = turbo_quantize<Bits>(static_cast<float>(y[i] * to_unit_variance), thresholds);
}

// The norm-corrected scale alpha = |x| / |L[idx]| (before fp16 rounding).
inline double turbo_corrected_scale(double norm, const std::uint8_t* idx, std::size_t dim,
                                    const float* levels) noexcept {
  double c2 = 0.0;
  for (std::size_t i = 0; i < dim; ++i) c2 += static_cast<double>(levels[idx[i]]) * levels[idx[i]];
  return c2 > 0.0 ? norm / std::sqrt(c2) : 0.0;
}

// Write a row from a rotated vector y whose model-space norm is `norm` (the
// caller has checked that alpha fits fp16). A zero vector is all zero bytes.
template <unsigned Bits>
void turbo_encode_rotated(const float* y, double norm, std::size_t dim, const float* levels,
                          const float* thresholds, std::byte* out) {
  const std::size_t n_bytes = turbo_row_bytes(Bits, dim);
  if (!(norm > 0.0)) {
    std::memset(out, 0, n_bytes);
    return;
  }
  const double to_unit_variance = std::sqrt(static_cast<double>(dim)) / norm;
  std::uint8_t idx[kTurboGroup];
  double c2 = 0.0;
  for (std::size_t g = 0; g < dim / kTurboGroup; ++g) {
    for (std::size_t j = 0; j < kTurboGroup; ++j) {
      idx[j] = turbo_quantize<Bits>(static_cast<float>(y[g * kTurboGroup + j] * to_unit_variance), thresholds);
      c2 += static_cast<double>(levels[idx[j]]) * levels[idx[j]];
    }
    turbo_pack_group<Bits>(idx, out + 2 + g * turbo_group_bytes(Bits));
  }
  const double alpha = c2 > 0.0 ? norm / std::sqrt(c2) : 0.0;
  bits::store_u16(out, float_to_half_bits(static_cast<float>(alpha)));
}

// y = alpha * L[idx], in rotated space.
template <unsigned Bits>
void turbo_decode_rotated(const std::byte* in, std::size_t dim, const float* levels, float* y) noexcept {
  const float alpha = half_bits_to_float(bits::load_u16(in));
  std::uint8_t idx[kTurboGroup];
  for (std::size_t g = 0; g < dim / kTurboGroup; ++g) {
    turbo_unpack_group<Bits>(in + 2 + g * turbo_group_bytes(Bits), idx);
    for (std::size_t j = 0; j < kTurboGroup; ++j) y[g * kTurboGroup + j] = alpha * levels[idx[j]];
  }
}

// q' . decode_rotated(row) = alpha * sum_i q'_i L[idx_i]  (q' = R q).
template <unsigned Bits>
float turbo_dot_rotated(const float* q_rot, const std::byte* in, std::size_t dim, const float* levels) noexcept {
  std::uint8_t idx[kTurboGroup];
  float sum = 0.0f;
  for (std::size_t g = 0; g < dim / kTurboGroup; ++g) {
    turbo_unpack_group<Bits>(in + 2 + g * turbo_group_bytes(Bits), idx);
    for (std::size_t j = 0; j < kTurboGroup; ++j) sum += q_rot[g * kTurboGroup + j] * levels[idx[j]];
  }
  return half_bits_to_float(bits::load_u16(in)) * sum;
}

// acc += w * decode_rotated(row), in rotated space.
template <unsigned Bits>
void turbo_accumulate_rotated(float* acc, float w, const std::byte* in, std::size_t dim,
                              const float* levels) noexcept {
  const float wa = w * half_bits_to_float(bits::load_u16(in));
  std::uint8_t idx[kTurboGroup];
  for (std::size_t g = 0; g < dim / kTurboGroup; ++g) {
    turbo_unpack_group<Bits>(in + 2 + g * turbo_group_bytes(Bits), idx);
    for (std::size_t j = 0; j < kTurboGroup; ++j) acc[g * kTurboGroup + j] += wa * levels[idx[j]];
  }
}

}  // namespace kvq::reference
