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

#include <kvq/reference/per_channel.hpp>
#include <kvq/reference/turbo.hpp>
#include <kvq/reference/uniform.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

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

// ---------------------------------------------------------------------------
// Per-channel K tiles (reference/per_channel.hpp). A tile scores
// b + sum_c q'_c k[t][c] with q'_c = q_c s_c and b = sum_c q_c m_c; the int8
// path quantizes the folded query q' once per tile and query, per block of 32
// channels as above (step d_b, codes c_j), and keeps b in f32:
//     score[t] = b + sum_b d_b (sum_j c_j k[t][32b + j])
// The integer sums are exact; against the f32 score, only the rounding of q':
//     |score[t] - f32[t]| <= sum_b (d_b / 2) sum_j k[t][32b + j]   (+ f32 rounding)
// i.e. half a folded-query step times the codes (at most 2^bits - 1 each).
// Needs head_dim a multiple of 32 and, for the kernels' 32-token code runs,
// tile_tokens a multiple of 64 (4 bits) or 128 (3 and 2 bits); other shapes
// keep f32 scores (per_channel_int8_supported).
inline constexpr bool per_channel_int8_supported(unsigned bits, std::size_t head_dim,
                                                 std::size_t tile_tokens) noexcept {
  return head_dim % kBlockValues == 0 && tile_tokens % (bits == 4 ? 64 : 128) == 0;
}

// The folded query of one tile, quantized: qb[head_dim / 32] and b.
template <unsigned Bits>
float per_channel_fold_int8(const float* q, const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens,
                            Int8QueryBlock* qb) {
  std::vector<float> qs(head_dim);
  const float bias = fold_query<Bits>(q, tile, head_dim, tile_tokens, qs.data());
  for (std::size_t b = 0; b < head_dim / kBlockValues; ++b) qb[b] = quantize_query_block(qs.data() + b * kBlockValues);
  return bias;
}

// out[t] = the int8 score of token t of the tile.
template <unsigned Bits>
void per_channel_scores_int8(const float* q, const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens,
                             float* out) {
  std::vector<Int8QueryBlock> qb(head_dim / kBlockValues);
  const float bias = per_channel_fold_int8<Bits>(q, tile, head_dim, tile_tokens, qb.data());
  const std::size_t run = per_channel_run_bytes<Bits>(tile_tokens);
  std::vector<std::uint8_t> k(tile_tokens);
  std::vector<std::int32_t> s(tile_tokens);
  std::vector<float> total(tile_tokens, 0.0f);
  for (std::size_t b = 0; b < qb.size(); ++b) {
    std::fill(s.begin(), s.end(), 0);
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      unpack_run<Bits>(tile + (b * kBlockValues + j) * run, tile_tokens, k.data());
      for (std::size_t t = 0; t < tile_tokens; ++t) s[t] += qb[b].c[j] * k[t];
    }
    for (std::size_t t = 0; t < tile_tokens; ++t) total[t] += qb[b].d * static_cast<float>(s[t]);
  }
  for (std::size_t t = 0; t < tile_tokens; ++t) out[t] = bias + total[t];
}

// The bound above for every token of the tile.
template <unsigned Bits>
void per_channel_int8_score_bound(const float* q, const std::byte* tile, std::size_t head_dim,
                                  std::size_t tile_tokens, double* bound) {
  std::vector<Int8QueryBlock> qb(head_dim / kBlockValues);
  per_channel_fold_int8<Bits>(q, tile, head_dim, tile_tokens, qb.data());
  const std::size_t run = per_channel_run_bytes<Bits>(tile_tokens);
  std::vector<std::uint8_t> k(tile_tokens);
  std::fill(bound, bound + tile_tokens, 0.0);
  for (std::size_t c = 0; c < head_dim; ++c) {
    unpack_run<Bits>(tile + c * run, tile_tokens, k.data());
    for (std::size_t t = 0; t < tile_tokens; ++t) bound[t] += 0.5 * double(qb[c / kBlockValues].d) * k[t];
  }
}

}  // namespace kvq::reference
