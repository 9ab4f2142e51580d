// Scalar reference of int8-query scores: the query quantized once per step to
// int8 per block of 32 values (the activation side of ggml's q4_0 x q8_0 dot
// products), then integer dot products with the uniform formats' codes.
//
// This is the oracle of the int8 score kernels (kernels/int8_dot-inl.h,
// rows-inl.h's ScoresInt8) and the statement of their accuracy contract.
//
// Quantization of a query block q_0..q_31:
//     d = max_j |q_j| / 127 (f32),   c_j = nearest integer to q_j / d (ties to
//     even), so c_j in [-127, 127] and |q_j - d c_j| <= d / 2;
//     s = sum_j q_j (f32, kept exact-ish for the offset term below).
// A zero block has d = 0 and codes 0. A block holding NaN or Inf (or whose
// sum overflows) has d = NaN and codes 0: every score reading it is NaN.
//
// Score of a key row with blocks x_j = d_k c'_j + m_k (m_k = 0 for q8_0 and
// q4_0; q4_0's c' = n - 8 stays in the integer sum):
//     score = sum_b [ d_k d (sum_j c_j c'_j) + m_k s ]
// The integer sums are exact (|sum| < 2^24). Against the f32 score q . x the
// only approximation is the query rounding:
//     |score - q . x| <= sum_b (d_b / 2) sum_j |x_j - m_b|     (+ f32 rounding)
// i.e. half a query step times the L1 norm of the key's code part.
#pragma once

#include <kvq/reference/uniform.hpp>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace kvq::reference {

struct Int8QueryBlock {
  float d = 0.0f;    // step: q_j ~ d * c_j
  float sum = 0.0f;  // sum_j q_j, in f32, in index order
  std::int8_t c[kBlockValues] = {};
};

inline Int8QueryBlock quantize_query_block(const float* q) {
  Int8QueryBlock b;
  float amax = 0.0f;
  for (std::size_t j = 0; j < kBlockValues; ++j) {
    amax = std::fmax(amax, std::fabs(q[j]));
    b.sum += q[j];
  }
  if (!(amax <= FLT_MAX) || !std::isfinite(b.sum)) {
    b.d = std::numeric_limits<float>::quiet_NaN();
    return b;
  }
  b.d = amax / 127.0f;
  if (b.d == 0.0f) return b;
  for (std::size_t j = 0; j < kBlockValues; ++j) b.c[j] = static_cast<std::int8_t>(std::nearbyint(q[j] / b.d));
  return b;
}

// The int8 score of one row of a uniform format (Block as in uniform.hpp).
template <class Block>
float dot_row_int8(const Int8QueryBlock* qb, const std::byte* in, std::size_t dim) {
  int c[kBlockValues];
  float d, m, total = 0.0f;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    Block::unpack(in + b * Block::bytes, c, d, m);
    std::int32_t s = 0;
    for (std::size_t j = 0; j < kBlockValues; ++j) s += qb[b].c[j] * c[j];
    total += d * qb[b].d * static_cast<float>(s);
    total += m * qb[b].sum;  // 0 for the symmetric formats (sum is finite when d is)
  }
  return total;
}

// The bound above for one row: sum_b (d_b / 2) sum_j |x_j - m_b|.
template <class Block>
double int8_score_bound(const Int8QueryBlock* qb, const std::byte* in, std::size_t dim) {
  int c[kBlockValues];
  float d, m;
  double bound = 0.0;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    Block::unpack(in + b * Block::bytes, c, d, m);
    double l1 = 0.0;
    for (std::size_t j = 0; j < kBlockValues; ++j) l1 += std::fabs(double(d) * c[j]);
    bound += 0.5 * qb[b].d * l1;
  }
  return bound;
}

}  // namespace kvq::reference
