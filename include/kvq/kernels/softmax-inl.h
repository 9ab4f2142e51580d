// The online (running-max) softmax step of the fused attention pass, one
// chunk of scores at a time, with Highway's vector exp.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The scalar oracle is
// kvq/cache/fused_attention.hpp's description (and tests/kernels/softmax.cpp's
// double-precision softmax): for each query row i the chunk's scores s become
// weights p = exp(scale * s - m_new), where m_new = max(m_i, max scale * s) is
// the running maximum, l_i = l_i * exp(m_i - m_new) + sum p, and corr_i =
// exp(m_i - m_new) tells the caller by how much to rescale what it has already
// accumulated. A chunk is read twice (max, then exp) while it sits in L1.
//
// Rows hold `n` scores of which the first n_valid[i] take part (causal masks
// and chunk tails); the others get weight 0. Rows are padded: every row of the
// buffer is readable and writable up to n rounded up to a whole number of
// vectors (at most 16 floats: kernels::kSoftmaxPad). NaN scores (a NaN query or hostile metadata)
// stay NaN in the weights, so they poison that query's output, as a scalar
// softmax would; +Inf gives NaN (Inf - Inf) the same way.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(KVQ_KERNELS_SOFTMAX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_SOFTMAX_INL_H_
#undef KVQ_KERNELS_SOFTMAX_INL_H_
#else
#define KVQ_KERNELS_SOFTMAX_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace softmax {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::CappedTag<float, 16>;  // the row kernels' vectors
using VF = hn::Vec<DF>;
inline constexpr std::size_t kLanes = hn::MaxLanes(DF());
static_assert(kLanes <= 16, "rows are padded to 16 floats (kernels::kSoftmaxPad)");

// Lanes [0, valid) of the vector starting at element k of a row: a mask of
// lanes whose index is below `valid - k`.
HWY_INLINE auto ValidLanes(std::size_t k, std::size_t valid) {
  const DF df;
  return hn::FirstN(df, valid > k ? valid - k : 0);
}

HWY_INLINE void Row(float* HWY_RESTRICT s, std::size_t n, std::size_t valid, float scale, float& m, float& l,
                    float& corr) {
  const DF df;
  const std::size_t padded = (n + kLanes - 1) / kLanes * kLanes;
  const VF vscale = hn::Set(df, scale);
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  VF vmax = neg_inf;
  for (std::size_t k = 0; k < valid; k += kLanes)
    vmax = hn::Max(vmax, hn::IfThenElse(ValidLanes(k, valid), hn::Mul(hn::LoadU(df, s + k), vscale), neg_inf));
  const float chunk_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const float m_new = std::max(m, chunk_max);
  if (m_new == -std::numeric_limits<float>::infinity()) {  // nothing visible yet
    for (std::size_t k = 0; k < padded; k += kLanes) hn::StoreU(hn::Zero(df), df, s + k);
    corr = 1.0f;
    return;
  }
  corr = m == m_new ? 1.0f : std::exp(m - m_new);
  const VF vm = hn::Set(df, m_new);
  VF sum = hn::Zero(df);
  for (std::size_t k = 0; k < padded; k += kLanes) {
    const VF x = hn::MulSub(hn::LoadU(df, s + k), vscale, vm);  // scale * s - m_new <= 0
    // Exp maps NaN to 0 (its range check fails); keep NaN visible.
    const VF e = hn::IfThenZeroElse(hn::Not(ValidLanes(k, valid)),
                                    hn::IfThenElse(hn::IsNaN(x), x, hn::Exp(df, x)));
    hn::StoreU(e, df, s + k);
    sum = hn::Add(sum, e);
  }
  l = l * corr + hn::GetLane(hn::SumOfLanes(df, sum));
  m = m_new;
}

}  // namespace softmax

// Entry point (HWY_EXPORT needs a plain function). n_valid may be null (every
// score of every row takes part).
inline void OnlineSoftmax(float* s, std::size_t n_q, std::size_t stride, std::size_t n, const std::uint32_t* n_valid,
                          float scale, float* m, float* l, float* corr) {
  for (std::size_t i = 0; i < n_q; ++i)
    softmax::Row(s + i * stride, n, n_valid ? std::min<std::size_t>(n_valid[i], n) : n, scale, m[i], l[i], corr[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_SOFTMAX_INL_H_
