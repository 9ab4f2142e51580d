// Scalar reference of the uniform block formats: q8_0, q4_0, q4_1 (ggml's
// layouts, byte-identical to ggml's reference quantizers) and kvq's q3_1, q2_1.
//
// This is the oracle the SIMD kernels are tested against and the text to read
// when porting a kernel. Every uniform format cuts a row into blocks of 32
// values and stores, per block, a scale d (fp16), optionally an offset m (fp16),
// and one small integer code c per value. A value decodes as
//
//     x = d * c + m            (m = 0 for the symmetric q8_0 and q4_0)
//
// so a dot product with a query block factors as
//
//     q . x = d * sum_j q_j c_j + m * sum_j q_j
//
// and a weighted accumulation as acc_j += (w d) c_j + (w m). Byte layouts are in
// docs/FORMATS.md; all fields are little-endian.
#pragma once

#include <kvq/core/bits.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/half.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvq::reference {

inline constexpr std::size_t kBlockValues = 32;

namespace detail {
inline void require_half_representable(float v, std::string_view format, const char* what) {
  if (!std::isfinite(round_to_half(v)))
    kvq::detail::fail(Errc::out_of_range, std::string(format) + ": block " + what + " " +
                                              std::to_string(v) + " overflows fp16");
}

// 1/d for computing codes: 0 for a zero block (ggml's rule) and also when 1/d
// overflows float, i.e. d below 2^-128. Such a d rounds to fp16 zero, so the
// block decodes to its minimum whatever the codes; codes 0 keep every
// float -> int conversion defined (x * inf would be Inf or NaN).
inline float inverse_step(float d) noexcept {
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  return std::isfinite(id) ? id : 0.0f;
}

// The asymmetric quantizer shared by q4_1, q3_1 and q2_1 (ggml's q4_1 rule):
// d = (max - min) / (2^bits - 1), codes rounded half-up from (x - min) / d in
// float, the fp32 scale (not its fp16 rounding) used for the division.
template <unsigned Bits>
void quantize_asymmetric(const float* x, std::string_view format, float& d, float& m,
                         std::uint8_t* codes) {
  constexpr int nmax = (1 << Bits) - 1;
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (std::size_t j = 0; j < kBlockValues; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  d = (hi - lo) / nmax;
  m = lo;
  require_half_representable(d, format, "scale");
  require_half_representable(m, format, "minimum");
  const float id = inverse_step(d);
  for (std::size_t j = 0; j < kBlockValues; ++j) {
    const int c = static_cast<std::int8_t>((x[j] - lo) * id + 0.5f);
    codes[j] = static_cast<std::uint8_t>(std::min(nmax, c));
  }
}
}  // namespace detail

// ---------------------------------------------------------------------------
// q8_0: [d: fp16][c: 32 x int8]                     34 bytes, 8.5 bits/value
// d = max|x| / 127, c = round-half-away(x / d).
struct Q8_0Block {
  static constexpr std::string_view name = "q8_0";
  static constexpr std::size_t bytes = 34;

  static void encode(const float* x, std::byte* out) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < kBlockValues; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    detail::require_half_representable(d, name, "scale");
    const float id = detail::inverse_step(d);
    bits::store_u16(out, float_to_half_bits(d));
    for (std::size_t j = 0; j < kBlockValues; ++j)
      out[2 + j] = static_cast<std::byte>(static_cast<std::int8_t>(std::roundf(x[j] * id)));
  }
  static void unpack(const std::byte* in, int* c, float& d, float& m) {
    d = half_bits_to_float(bits::load_u16(in));
    m = 0.0f;
    for (std::size_t j = 0; j < kBlockValues; ++j)
      c[j] = static_cast<std::int8_t>(bits::byte_at(in, 2 + j));
  }
};

// ---------------------------------------------------------------------------
// q4_0: [d: fp16][16 bytes: byte j = n_j | n_{j+16} << 4]   18 bytes, 4.5 bits/value
// The value of largest magnitude, with its sign, maps to code -8: d = that / -8,
// n = min(15, trunc(x / d + 8.5)), c = n - 8. (+|max| clamps to +7: ggml's rule.)
struct Q4_0Block {
  static constexpr std::string_view name = "q4_0";
  static constexpr std::size_t bytes = 18;

  static void encode(const float* x, std::byte* out) {
    float amax = 0.0f, max = 0.0f;
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    detail::require_half_representable(d, name, "scale");
    const float id = detail::inverse_step(d);
    bits::store_u16(out, float_to_half_bits(d));
    for (std::size_t j = 0; j < 16; ++j) {
      const int n0 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[j] * id + 8.5f)));
      const int n1 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[j + 16] * id + 8.5f)));
      out[2 + j] = static_cast<std::byte>(n0 | (n1 << 4));
    }
  }
  static void unpack(const std::byte* in, int* c, float& d, float& m) {
    d = half_bits_to_float(bits::load_u16(in));
    m = 0.0f;
    for (std::size_t j = 0; j < 16; ++j) {
      const unsigned b = bits::byte_at(in, 2 + j);
      c[j] = static_cast<int>(b & 0xF) - 8;
      c[j + 16] = static_cast<int>(b >> 4) - 8;
    }
  }
};

// ---------------------------------------------------------------------------
// q4_1: [d: fp16][m: fp16][16 bytes: byte j = c_j | c_{j+16} << 4]   20 bytes, 5.0 bits/value
struct Q4_1Block {
  static constexpr std::string_view name = "q4_1";
  static constexpr std::size_t bytes = 20;

  static void encode(const float* x, std::byte* out) {
    float d, m;
    std::uint8_t c[kBlockValues];
    detail::quantize_asymmetric<4>(x, name, d, m, c);
    bits::store_u16(out, float_to_half_bits(d));
    bits::store_u16(out + 2, float_to_half_bits(m));
    for (std::size_t j = 0; j < 16; ++j) out[4 + j] = static_cast<std::byte>(c[j] | (c[j + 16] << 4));
  }
  static void unpack(const std::byte* in, int* c, float& d, float& m) {
    d = half_bits_to_float(bits::load_u16(in));
    m = half_bits_to_float(bits::load_u16(in + 2));
    for (std::size_t j = 0; j < 16; ++j) {
      const unsigned b = bits::byte_at(in, 4 + j);
      c[j] = static_cast<int>(b & 0xF);
      c[j + 16] = static_cast<int>(b >> 4);
    }
  }
};

// ---------------------------------------------------------------------------
// q3_1: [d: fp16][m: fp16][8 bytes low bits][4 bytes high bits]   16 bytes, 4.0 bits/value
//   low:  byte j (0..7) = lo(c_j) | lo(c_{j+8}) << 2 | lo(c_{j+16}) << 4 | lo(c_{j+24}) << 6,
//         lo(c) = c & 3
//   high: little-endian u32 whose bit j is bit 2 of c_j
// The strided 2-bit plane unpacks with four shifts of one 8-byte load into
// codes in order; the high plane is one 32-bit mask.
struct Q3_1Block {
  static constexpr std::string_view name = "q3_1";
  static constexpr std::size_t bytes = 16;

  static void encode(const float* x, std::byte* out) {
    float d, m;
    std::uint8_t c[kBlockValues];
    detail::quantize_asymmetric<3>(x, name, d, m, c);
    bits::store_u16(out, float_to_half_bits(d));
    bits::store_u16(out + 2, float_to_half_bits(m));
    std::uint32_t high = 0;
    for (std::size_t j = 0; j < 8; ++j) {
      out[4 + j] = static_cast<std::byte>((c[j] & 3) | ((c[j + 8] & 3) << 2) |
                                          ((c[j + 16] & 3) << 4) | ((c[j + 24] & 3) << 6));
    }
    for (std::size_t j = 0; j < kBlockValues; ++j) high |= static_cast<std::uint32_t>(c[j] >> 2) << j;
    bits::store_u32(out + 12, high);
  }
  static void unpack(const std::byte* in, int* c, float& d, float& m) {
    d = half_bits_to_float(bits::load_u16(in));
    m = half_bits_to_float(bits::load_u16(in + 2));
    const std::uint32_t high = bits::load_u32(in + 12);
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      const unsigned lo = (bits::byte_at(in, 4 + j % 8) >> (2 * (j / 8))) & 3;
      c[j] = static_cast<int>(lo | (((high >> j) & 1u) << 2));
    }
  }
};

// ---------------------------------------------------------------------------
// q2_1: [d: fp16][m: fp16][8 bytes: byte j = c_j | c_{j+8} << 2 | c_{j+16} << 4 | c_{j+24} << 6]
//                                                                   12 bytes, 3.0 bits/value
struct Q2_1Block {
  static constexpr std::string_view name = "q2_1";
  static constexpr std::size_t bytes = 12;

  static void encode(const float* x, std::byte* out) {
    float d, m;
    std::uint8_t c[kBlockValues];
    detail::quantize_asymmetric<2>(x, name, d, m, c);
    bits::store_u16(out, float_to_half_bits(d));
    bits::store_u16(out + 2, float_to_half_bits(m));
    for (std::size_t j = 0; j < 8; ++j)
      out[4 + j] = static_cast<std::byte>(c[j] | (c[j + 8] << 2) | (c[j + 16] << 4) | (c[j + 24] << 6));
  }
  static void unpack(const std::byte* in, int* c, float& d, float& m) {
    d = half_bits_to_float(bits::load_u16(in));
    m = half_bits_to_float(bits::load_u16(in + 2));
    for (std::size_t j = 0; j < kBlockValues; ++j)
      c[j] = static_cast<int>((bits::byte_at(in, 4 + j % 8) >> (2 * (j / 8))) & 3);
  }
};

// ---------------------------------------------------------------------------
// Row operations, identical for every block format: a row of `dim` values
// (dim a multiple of 32) is dim/32 consecutive blocks.

template <class Block>
void encode_row(const float* x, std::size_t dim, std::byte* out) {
  for (std::size_t b = 0; b < dim / kBlockValues; ++b)
    Block::encode(x + b * kBlockValues, out + b * Block::bytes);
}

template <class Block>
void decode_row(const std::byte* in, std::size_t dim, float* y) {
  int c[kBlockValues];
  float d, m;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    Block::unpack(in + b * Block::bytes, c, d, m);
    for (std::size_t j = 0; j < kBlockValues; ++j) y[b * kBlockValues + j] = d * static_cast<float>(c[j]) + m;
  }
}

// q . decode(row), with the block scale and offset factored out of the sum.
template <class Block>
float dot_row(const float* q, const std::byte* in, std::size_t dim) {
  int c[kBlockValues];
  float d, m, total = 0.0f;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    Block::unpack(in + b * Block::bytes, c, d, m);
    const float* qb = q + b * kBlockValues;
    float qc = 0.0f, qsum = 0.0f;
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      qc += qb[j] * static_cast<float>(c[j]);
      qsum += qb[j];
    }
    total += d * qc + m * qsum;
  }
  return total;
}

// acc += w * decode(row)
template <class Block>
void accumulate_row(float* acc, float w, const std::byte* in, std::size_t dim) {
  int c[kBlockValues];
  float d, m;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    Block::unpack(in + b * Block::bytes, c, d, m);
    const float wd = w * d, wm = w * m;
    float* ab = acc + b * kBlockValues;
    for (std::size_t j = 0; j < kBlockValues; ++j) ab[j] += wd * static_cast<float>(c[j]) + wm;
  }
}

}  // namespace kvq::reference
