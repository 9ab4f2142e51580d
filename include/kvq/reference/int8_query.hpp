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

#include <kvq/reference/turbo.hpp>
#include <kvq/reference/uniform.hpp>

#include <algorithm>
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

// ---------------------------------------------------------------------------
// Turbo keys (reference/turbo.hpp). A row scores alpha * sum_i q'_i L[idx_i]
// in rotated space; the int8 path rounds the codebook once, per codec, to
// integers: L_k ~ s_L * l_k with l_k in [-127, 127], and scores
//     score = (alpha s_L) * sum_b [ d_b (sum_j c_j l[idx_j]) ]
// with the rotated query q' quantized per block of 32 as above (turbo keys
// need head_dim a multiple of 32 for this path; 80 and 112 keep f32 scores).
//
// The step s_L: the codes must fit int8, so s_L >= max_k |L_k| / 127; among
// the steps amax/127 * (1 + i/512), i = 0..511, the one with the smallest
// level error e_L = max_k |L_k - s_L l_k| (the first such, in that order).
// So e_L <= max|L| / 254 (half the finest step), and with 4 or 8 levels some
// coarser step usually puts every level much closer to its integer.
//
// Against the f32 score (alpha sum_i q'_i L_i), with u_i = L[idx_i]:
//     |score - f32| <= alpha sum_b [ (d_b / 2) sum_j |u_j| + d_b e_L sum_j |c_j| ]
//                      (+ f32 rounding)
// the first term the query rounding (|q'_j - d_b c_j| <= d_b / 2), the second
// the codebook rounding (|u_j - s_L l_j| <= e_L). A NaN/Inf alpha (hostile
// bytes) or query block gives a NaN/Inf score, as the f32 path does.
struct Int8Codebook {
  float step = 0.0f;           // s_L
  float error = 0.0f;          // e_L = max_k |L_k - s_L l_k|
  std::int8_t levels[16] = {};  // l_k, zero-padded to 16 (one byte table)
};

inline Int8Codebook int8_codebook(const float* levels, std::size_t n) {
  Int8Codebook cb;
  double amax = 0.0;
  for (std::size_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(double(levels[k])));
  if (!(amax > 0.0)) return cb;
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 512; ++i) {
    const float s = static_cast<float>(amax / 127.0 * (1.0 + i / 512.0));
    double err = 0.0;
    bool fits = true;
    for (std::size_t k = 0; k < n; ++k) {
      const double l = std::nearbyint(double(levels[k]) / s);
      fits = fits && std::fabs(l) <= 127.0;
      err = std::max(err, std::fabs(double(levels[k]) - double(s) * l));
    }
    if (fits && err < best) {
      best = err;
      cb.step = s;
    }
  }
  for (std::size_t k = 0; k < n; ++k)
    cb.levels[k] = static_cast<std::int8_t>(std::nearbyint(double(levels[k]) / cb.step));
  cb.error = static_cast<float>(best);
  return cb;
}

// The int8 score of one turbo row (rotated-space query blocks qb; levels and
// step: an Int8Codebook's).
template <unsigned Bits>
float turbo_dot_row_int8(const Int8QueryBlock* qb, const std::byte* in, std::size_t dim, const std::int8_t* levels,
                         float step) {
  std::uint8_t idx[kTurboGroup];
  float total = 0.0f;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    std::int32_t s = 0;
    for (std::size_t h = 0; h < kBlockValues / kTurboGroup; ++h) {
      turbo_unpack_group<Bits>(in + 2 + (2 * b + h) * turbo_group_bytes(Bits), idx);
      for (std::size_t j = 0; j < kTurboGroup; ++j) s += qb[b].c[h * kTurboGroup + j] * levels[idx[j]];
    }
    total += qb[b].d * static_cast<float>(s);
  }
  return half_bits_to_float(bits::load_u16(in)) * step * total;
}

// The bound above for one turbo row (levels: the f32 codebook L).
template <unsigned Bits>
double turbo_int8_score_bound(const Int8QueryBlock* qb, const std::byte* in, std::size_t dim, const float* levels,
                              const Int8Codebook& cb) {
  std::uint8_t idx[kTurboGroup];
  double bound = 0.0;
  for (std::size_t b = 0; b < dim / kBlockValues; ++b) {
    double l1 = 0.0, c1 = 0.0;
    for (std::size_t h = 0; h < kBlockValues / kTurboGroup; ++h) {
      turbo_unpack_group<Bits>(in + 2 + (2 * b + h) * turbo_group_bytes(Bits), idx);
      for (std::size_t j = 0; j < kTurboGroup; ++j) {
        l1 += std::fabs(double(levels[idx[j]]));
        c1 += std::abs(int(qb[b].c[h * kTurboGroup + j]));
      }
    }
    bound += qb[b].d * (0.5 * l1 + double(cb.error) * c1);
  }
  return std::fabs(double(half_bits_to_float(bits::load_u16(in)))) * bound;
}

}  // namespace kvq::reference
