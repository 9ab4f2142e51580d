#include "kvq_test.hpp"
#include "support/random_vector.hpp"

#include <kvq/codec/turbo.hpp>
#include <kvq/rotation/orthogonal.hpp>

#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using kvq::test::norm;
using kvq::test::random_vector;

}  // namespace

TEST_CASE("RandomOrthogonal is orthonormal", "[rotation][orthogonal]") {
  for (std::size_t d : {1u, 2u, 3u, 5u, 80u, 96u, 112u, 128u}) {
    INFO("dim " << d);
    const kvq::RandomOrthogonal q(d, 42);
    // Columns of the rotation via forward on basis vectors.
    std::vector<double> m(d * d);
    std::vector<float> e(d), y(d);
    for (std::size_t j = 0; j < d; ++j) {
      std::fill(e.begin(), e.end(), 0.0f);
      e[j] = 1.0f;
      q.forward(e.data(), y.data());
      for (std::size_t i = 0; i < d; ++i) m[i * d + j] = y[i];
    }
    double qtq = 0.0, qqt = 0.0;
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t b = 0; b < d; ++b) {
        double cols = 0.0, rows = 0.0;
        for (std::size_t i = 0; i < d; ++i) {
          cols += m[i * d + a] * m[i * d + b];
          rows += m[a * d + i] * m[b * d + i];
        }
        const double id = a == b ? 1.0 : 0.0;
        qtq = std::max(qtq, std::abs(cols - id));
        qqt = std::max(qqt, std::abs(rows - id));
      }
    CHECK(qtq < 1e-5);
    CHECK(qqt < 1e-5);
  }
}

TEST_CASE("RandomOrthogonal preserves norms and inverts forward", "[rotation][orthogonal]") {
  for (std::size_t d : {3u, 80u, 96u, 112u, 200u, 300u}) {
    INFO("dim " << d);
    const kvq::RandomOrthogonal q(d, 7);
    const auto x = random_vector(d, 1000 + d);
    std::vector<float> y(d), z(d);
    q.forward(x.data(), y.data());
    CHECK(std::abs(norm(y) - norm(x)) < 1e-6 * norm(x));
    q.inverse(y.data(), z.data());
    double err = 0.0, moved = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
      err = std::max(err, double(std::abs(z[i] - x[i])));
      moved = std::max(moved, double(std::abs(y[i] - x[i])));
    }
    CHECK(err < 1e-6 * norm(x));
    CHECK(moved > 0.1);
  }
}

TEST_CASE("RandomOrthogonal works in place, also above the stack buffer", "[rotation][orthogonal]") {
  for (std::size_t d : {96u, 300u}) {
    INFO("dim " << d);
    const kvq::RandomOrthogonal q(d, 3);
    const auto x = random_vector(d, 5);
    std::vector<float> y(d), z(d), buf = x;
    q.forward(x.data(), y.data());
    q.forward(buf.data(), buf.data());
    CHECK(buf == y);
    q.inverse(y.data(), z.data());
    q.inverse(buf.data(), buf.data());
    CHECK(buf == z);
  }
}

TEST_CASE("RandomOrthogonal is deterministic per seed and differs across seeds",
          "[rotation][orthogonal]") {
  const std::size_t d = 80;
  CHECK(kvq::RandomOrthogonal(d, 1).matrix() == kvq::RandomOrthogonal(d, 1).matrix());
  CHECK(kvq::RandomOrthogonal(d, 1).matrix() != kvq::RandomOrthogonal(d, 2).matrix());
}

TEST_CASE("RandomOrthogonal has Haar statistics", "[rotation][orthogonal]") {
  // Under the Haar measure every entry of Q has mean 0 and variance 1/d, and
  // det Q is +1 or -1 with equal probability. Without the sign(R_ii) fix,
  // Householder QR of a Gaussian matrix has a biased diagonal (Q_ii mostly < 0
  // in Eigen), which the diagonal-mean check detects.
  const std::size_t d = 16;
  const int trials = 400;
  double diag_sum = 0.0, sq_sum = 0.0;
  for (int t = 0; t < trials; ++t) {
    const kvq::RandomOrthogonal q(d, 100 + t);
    for (std::size_t i = 0; i < d; ++i) {
      diag_sum += q.matrix()[i * d + i];
      for (std::size_t j = 0; j < d; ++j) sq_sum += double(q.matrix()[i * d + j]) * q.matrix()[i * d + j];
    }
  }
  const double n = double(trials) * d;
  const double diag_mean = diag_sum / n;   // sd ≈ sqrt(1/d / n) = 0.0031
  CHECK(std::abs(diag_mean) < 0.015);
  CHECK(std::abs(sq_sum / (n * d) - 1.0 / d) < 1e-6);  // rows are unit vectors
}

TEST_CASE("RandomOrthogonal rejects dim 0", "[rotation][orthogonal]") {
  try {
    kvq::RandomOrthogonal q(0, 0);
    FAIL("no exception");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::invalid_argument);
  }
}

TEST_CASE("RandomOrthogonal is Q of Eigen's QR with a positive diagonal R", "[rotation][orthogonal]") {
  // An independent computation: the same Gaussian matrix factored by Eigen's
  // HouseholderQR, signs fixed so that R_ii > 0 (which makes Q unique).
  for (std::size_t d : {1u, 3u, 80u, 96u, 200u}) {
    INFO("dim " << d);
    const auto n = static_cast<Eigen::Index>(d);
    Eigen::MatrixXd a(n, n);
    kvq::Rng rng(kvq::Turbo<4>::kDefaultSeed);
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) a(i, j) = rng.normal();
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    const Eigen::MatrixXd q = qr.householderQ();
    const kvq::RandomOrthogonal ours(d, kvq::Turbo<4>::kDefaultSeed);
    double err = 0.0;
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) {
        const double s = qr.matrixQR()(j, j) < 0.0 ? -1.0 : 1.0;
        err = std::max(err, std::abs(s * q(i, j) - ours.matrix()[static_cast<std::size_t>(i * n + j)]));
      }
    CHECK(err < 1e-6);
  }
}
