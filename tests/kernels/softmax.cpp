// The online-softmax kernel against a double-precision softmax on every SIMD
// target: applied chunk by chunk with the running max and rescaling the
// caller does, it must give the softmax of the whole row; masked lanes get
// weight 0; NaN stays visible.
#include "kvq_test.hpp"
#include "support/targets.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// Softmax weights of row s (n values, the first `valid` visible), in double.
std::vector<double> reference(const std::vector<float>& s, std::size_t valid, float scale) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t t = 0; t < valid; ++t) m = std::max(m, double(scale) * s[t]);
  std::vector<double> p(s.size(), 0.0);
  double sum = 0.0;
  for (std::size_t t = 0; t < valid; ++t) sum += p[t] = std::exp(double(scale) * s[t] - m);
  for (auto& x : p) x /= sum;
  return p;
}

}  // namespace

TEST_CASE("kernels softmax: chunked online softmax equals the softmax of the row", "[kernels][softmax]") {
  const auto ran = kvq::test::for_each_target([] {
    kvq::Rng rng(5);
    for (std::size_t n : {1u, 7u, 16u, 33u, 200u, 1000u}) {
      for (std::size_t chunk : {1u, 5u, 16u, 128u}) {
        for (std::size_t valid : {n, (n + 1) / 2, std::size_t{1}}) {
          INFO("n=" << n << " chunk=" << chunk << " valid=" << valid);
          const std::size_t n_q = 3;
          std::vector<std::vector<float>> rows(n_q, std::vector<float>(n));
          for (auto& r : rows)
            for (std::size_t t = 0; t < n; ++t) r[t] = static_cast<float>(6.0 * rng.normal() + 0.01 * t);
          const float scale = 0.37f;
          // The caller's side of the pass: weights kept per row, rescaled by corr.
          std::vector<float> m(n_q, -std::numeric_limits<float>::infinity()), l(n_q, 0.0f), corr(n_q);
          std::vector<std::vector<float>> w(n_q, std::vector<float>(n, 0.0f));
          const std::size_t stride = chunk + kvq::kernels::kSoftmaxPad;
          std::vector<float> buf(n_q * stride);
          for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
            const std::size_t cn = std::min(chunk, n - c0);
            std::vector<std::uint32_t> nv(n_q);
            for (std::size_t i = 0; i < n_q; ++i) {
              std::copy_n(rows[i].begin() + c0, cn, buf.begin() + i * stride);
              nv[i] = static_cast<std::uint32_t>(valid > c0 ? std::min(valid - c0, cn) : 0);
            }
            kvq::kernels::online_softmax(buf.data(), n_q, stride, cn, nv.data(), scale, m.data(), l.data(),
                                         corr.data());
            for (std::size_t i = 0; i < n_q; ++i) {
              for (std::size_t t = 0; t < c0; ++t) w[i][t] *= corr[i];
              std::copy_n(buf.begin() + i * stride, cn, w[i].begin() + c0);
            }
          }
          for (std::size_t i = 0; i < n_q; ++i) {
            const auto ref = reference(rows[i], valid, scale);
            for (std::size_t t = 0; t < n; ++t) CHECK(std::fabs(w[i][t] / l[i] - ref[t]) <= 2e-6 * ref[t] + 1e-12);
          }
        }
      }
    }
  });
  kvq::test::require_targets_exercised(ran);
}

TEST_CASE("kernels softmax: NaN scores stay NaN, fully masked rows get zero weights", "[kernels][softmax]") {
  kvq::test::for_each_target([] {
    const std::size_t n = 20, stride = 32;
    std::vector<float> s(2 * stride, 1.0f);
    s[5] = std::numeric_limits<float>::quiet_NaN();
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0}, corr[2];
    const std::uint32_t valid[2] = {n, 0};
    kvq::kernels::online_softmax(s.data(), 2, stride, n, valid, 1.0f, m, l, corr);
    CHECK(std::isnan(l[0]));
    CHECK(std::isnan(s[5]));
    CHECK(s[4] > 0.0f);
    CHECK(l[1] == 0.0f);
    CHECK(m[1] == -INFINITY);
    for (std::size_t t = 0; t < n; ++t) CHECK(s[stride + t] == 0.0f);
  });
}
