// The exact-row kernels (f32, f16: windows, sinks, plain caches) against the
// codecs' scalar calls, on every SIMD target this machine can run: head_dim
// multiples of 16 (SIMD) and others (the scalar fallback), odd row counts,
// GQA 1..8, unaligned pointers, fp16 subnormals and extremes.
#include "kvq_test.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <kvq/cache/exact_codec.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

template <class Codec>
void check_shapes() {
  kvq::Rng rng(21);
  for (std::size_t d : {16u, 48u, 64u, 128u, 256u, 20u}) {
    const Codec c(d);
    for (std::size_t n : {1u, 3u, 8u, 13u, 37u, 64u}) {
      for (std::size_t n_q : {1u, 2u, 3u, 4u, 8u}) {
        INFO(Codec::name << " d=" << d << " n=" << n << " n_q=" << n_q);
        const std::size_t off = 3 + (n % 5);  // unaligned rows
        std::vector<std::byte> bytes(n * c.bytes_per_tile() + off);
        std::byte* rows = bytes.data() + off;
        for (std::size_t t = 0; t < n; ++t) {
          const auto x = kvq::test::random_vector(rng, d, 0.5f + float(t % 7));
          c.encode_tile(x.data(), rows + t * c.bytes_per_tile());
        }
        std::vector<float> qbuf(n_q * d + 1), wbuf(n_q * n + 1);
        float* q = qbuf.data() + 1;  // unaligned queries and weights
        float* w = wbuf.data() + 1;
        for (std::size_t i = 0; i < n_q * d; ++i) q[i] = static_cast<float>(rng.normal());
        for (std::size_t i = 0; i < n_q * n; ++i) w[i] = static_cast<float>(rng.uniform());
        std::vector<float> s(n_q * n), acc(n_q * d, 0.5f);
        kvq::kernels::scores(c, q, n_q, d, rows, n, s.data(), n);
        kvq::kernels::accumulate(c, w, n_q, n, rows, n, acc.data(), d);
        for (std::size_t i = 0; i < n_q; ++i) {
          std::vector<float> ref_acc(d, 0.5f);
          for (std::size_t t = 0; t < n; ++t) {
            float ref;
            c.scores(q + i * d, rows + t * c.bytes_per_tile(), &ref);
            // Any summation order: |error| <= d * eps * sum |q_j x_j|.
            std::vector<float> x(d);
            c.decode_tile(rows + t * c.bytes_per_tile(), x.data());
            double mag = 0.0;
            for (std::size_t j = 0; j < d; ++j) mag += std::fabs(double(q[i * d + j]) * x[j]);
            CHECK(std::fabs(s[i * n + t] - ref) <= 1e-6 * double(d) * mag + 1e-30);
            c.accumulate(ref_acc.data(), w + i * n + t, rows + t * c.bytes_per_tile());
          }
          for (std::size_t j = 0; j < d; ++j)
            CHECK(std::fabs(acc[i * d + j] - ref_acc[j]) <= 1e-5 * (1.0 + std::fabs(ref_acc[j])) * double(n));
        }
      }
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("kernels exact: scores and accumulate equal the codec's scalar calls on every target",
                   "[kernels][exact]", kvq::ExactF32, kvq::ExactF16) {
  const auto ran = kvq::test::for_each_target([] { check_shapes<TestType>(); });
  kvq::test::require_targets_exercised(ran);
}

TEST_CASE("kernels exact: f16 rows widen bit-exactly, subnormals and 65504 included", "[kernels][exact]") {
  // One-hot queries read single values back: score == the decoded value exactly.
  const std::size_t d = 32;
  const kvq::ExactF16 c(d);
  const float values[] = {0.0f, -0.0f, 5.96e-8f, -6.1e-5f, 1.0f / 3.0f, 65504.0f, -65504.0f, 1e-7f, 3.14159f};
  std::vector<float> x(d);
  for (std::size_t j = 0; j < d; ++j) x[j] = values[j % 9] * (j < 9 ? 1.0f : 0.5f);
  std::vector<std::byte> row(c.bytes_per_tile());
  c.encode_tile(x.data(), row.data());
  std::vector<float> decoded(d);
  c.decode_tile(row.data(), decoded.data());
  kvq::test::for_each_target([&] {
    for (std::size_t j = 0; j < d; ++j) {
      std::vector<float> q(d, 0.0f);
      q[j] = 1.0f;
      float s = -1.0f;
      kvq::kernels::scores(c, q.data(), 1, d, row.data(), 1, &s, 1);
      CHECK((std::memcmp(&s, &decoded[j], 4) == 0 || (s == 0.0f && decoded[j] == 0.0f)));
    }
  });
}
