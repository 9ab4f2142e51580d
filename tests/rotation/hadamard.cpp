#include "kvq_test.hpp"
#include "support/random_vector.hpp"

#include <kvq/rotation/hadamard.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// Columns of the rotation: forward applied to each basis vector. Returns M with
// M[i*d + j] = (forward e_j)_i.
template <class R>
std::vector<double> rotation_matrix(const R& r, std::size_t d) {
  std::vector<double> m(d * d);
  std::vector<float> e(d), y(d);
  for (std::size_t j = 0; j < d; ++j) {
    std::fill(e.begin(), e.end(), 0.0f);
    e[j] = 1.0f;
    r.forward(e.data(), y.data());
    for (std::size_t i = 0; i < d; ++i) m[i * d + j] = y[i];
  }
  return m;
}

double max_gram_error(const std::vector<double>& m, std::size_t d) {
  double worst = 0.0;
  for (std::size_t a = 0; a < d; ++a)
    for (std::size_t b = 0; b < d; ++b) {
      double dot = 0.0;
      for (std::size_t i = 0; i < d; ++i) dot += m[i * d + a] * m[i * d + b];
      worst = std::max(worst, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  return worst;
}

using kvq::test::norm;
using kvq::test::random_vector;

}  // namespace

TEST_CASE("RandomizedHadamard is orthonormal", "[rotation][hadamard]") {
  for (std::size_t d : {1u, 2u, 4u, 8u, 64u, 128u, 256u}) {
    INFO("dim " << d);
    const kvq::RandomizedHadamard h(d, 42);
    const auto m = rotation_matrix(h, d);
    CHECK(max_gram_error(m, d) < 1e-5);
    // Every entry of H·D/sqrt(d) has magnitude exactly 1/sqrt(d).
    for (double x : m) CHECK(std::abs(std::abs(x) - 1.0 / std::sqrt(double(d))) < 1e-6);
  }
}

TEST_CASE("RandomizedHadamard preserves norms and inverts forward", "[rotation][hadamard]") {
  for (std::size_t d : {16u, 64u, 128u, 512u}) {
    INFO("dim " << d);
    const kvq::RandomizedHadamard h(d, 7);
    const auto x = random_vector(d, 1000 + d);
    std::vector<float> y(d), z(d);
    h.forward(x.data(), y.data());
    CHECK(std::abs(norm(y) - norm(x)) < 1e-6 * norm(x));
    h.inverse(y.data(), z.data());
    double err = 0.0;
    for (std::size_t i = 0; i < d; ++i) err = std::max(err, double(std::abs(z[i] - x[i])));
    CHECK(err < 1e-6 * norm(x));
    // The rotation is not the identity.
    double moved = 0.0;
    for (std::size_t i = 0; i < d; ++i) moved = std::max(moved, double(std::abs(y[i] - x[i])));
    CHECK(moved > 0.1);
  }
}

TEST_CASE("RandomizedHadamard works in place", "[rotation][hadamard]") {
  const std::size_t d = 128;
  const kvq::RandomizedHadamard h(d, 3);
  const auto x = random_vector(d, 5);
  std::vector<float> y(d), buf = x;
  h.forward(x.data(), y.data());
  h.forward(buf.data(), buf.data());
  CHECK(buf == y);
  h.inverse(buf.data(), buf.data());
  for (std::size_t i = 0; i < d; ++i) CHECK(std::abs(buf[i] - x[i]) < 1e-5f);
}

TEST_CASE("RandomizedHadamard matches the definition H·D/sqrt(d)", "[rotation][hadamard]") {
  // Sylvester Hadamard entry: H[i][j] = (-1)^popcount(i & j).
  const std::size_t d = 32;
  const kvq::RandomizedHadamard h(d, 11);
  const auto m = rotation_matrix(h, d);
  kvq::Rng rng(11);
  std::vector<float> signs(d);
  for (auto& s : signs) s = rng.sign();
  CHECK(signs == h.signs());
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < d; ++j) {
      const double hij = (std::popcount(i & j) % 2) ? -1.0 : 1.0;
      CHECK(std::abs(m[i * d + j] - hij * signs[j] / std::sqrt(double(d))) < 1e-7);
    }
}

TEST_CASE("RandomizedHadamard is deterministic per seed and differs across seeds",
          "[rotation][hadamard]") {
  const std::size_t d = 64;
  const auto x = random_vector(d, 9);
  std::vector<float> a(d), b(d), c(d);
  kvq::RandomizedHadamard(d, 1).forward(x.data(), a.data());
  kvq::RandomizedHadamard(d, 1).forward(x.data(), b.data());
  kvq::RandomizedHadamard(d, 2).forward(x.data(), c.data());
  CHECK(a == b);
  CHECK(a != c);
  CHECK(kvq::RandomizedHadamard(d, 1).signs() != kvq::RandomizedHadamard(d, 2).signs());
}

TEST_CASE("RandomizedHadamard rejects dims that are not powers of two", "[rotation][hadamard]") {
  for (std::size_t d : {0u, 3u, 6u, 80u, 96u, 127u, 129u}) {
    INFO("dim " << d);
    try {
      kvq::RandomizedHadamard h(d, 0);
      FAIL("no exception for dim " << d);
    } catch (const kvq::Error& e) {
      CHECK(e.code() == kvq::Errc::invalid_argument);
      CHECK(std::string(e.what()).find(std::to_string(d)) != std::string::npos);
    }
  }
}
