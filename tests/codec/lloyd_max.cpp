#include "kvq_test.hpp"

#include <kvq/codec/lloyd_max.hpp>
#include <kvq/codec/lloyd_max_tables.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace {

// Reconstruction of x by a codebook (thresholds are the decision boundaries).
double quantize(const kvq::Codebook& cb, double x) {
  const auto it = std::upper_bound(cb.thresholds.begin(), cb.thresholds.end(), x);
  return cb.levels[static_cast<std::size_t>(it - cb.thresholds.begin())];
}

void check_shape(const kvq::Codebook& cb, int bits) {
  REQUIRE(cb.bits == bits);
  REQUIRE(cb.levels.size() == (std::size_t{1} << bits));
  REQUIRE(cb.thresholds.size() == cb.levels.size() - 1);
  for (std::size_t i = 0; i + 1 < cb.levels.size(); ++i) {
    CHECK(cb.levels[i] < cb.levels[i + 1]);
    CHECK(cb.thresholds[i] == Approx(0.5 * (cb.levels[i] + cb.levels[i + 1])).margin(1e-15));
  }
  for (std::size_t i = 0; i < cb.levels.size(); ++i)
    CHECK(cb.levels[i] == -cb.levels[cb.levels.size() - 1 - i]);
}

}  // namespace

// J. Max, "Quantizing for minimum distortion", IRE Trans. Inform. Theory IT-6
// (1960) 7-12, Table I (normal distribution, minimum mean-squared error). Max's
// values are printed to 4 significant digits and his 4-bit error (0.009497) is
// low by 4e-6 relative to the exact optimum (0.0095010; his 3-bit 0.03454 is
// 0.0345478 rounded down): his MSE entries are checked to 5e-4 relative, and the
// exact optimum to 1e-9 against an independent 30-digit mpmath Lloyd iteration.
TEST_CASE("Gaussian Lloyd-Max reproduces Max (1960)", "[codec][lloyd_max]") {
  struct Row {
    int bits;
    std::vector<double> positive_levels;  // Max's table (positive half)
    double max_mse;                       // Max's table
    double exact_mse;                     // 30-digit reference
  };
  const Row rows[] = {
      {1, {0.7979}, 0.3634, 0.3633802276},
      {2, {0.4528, 1.5104}, 0.1175, 0.1174818478},
      {3, {0.2451, 0.7560, 1.3440, 2.1520}, 0.03454, 0.03454776079},
      {4, {}, 0.009497, 0.009501008008},
  };
  for (const Row& row : rows) {
    INFO("bits " << row.bits);
    const kvq::Codebook cb = kvq::lloyd_max_gaussian(row.bits);
    check_shape(cb, row.bits);
    const std::size_t half = cb.levels.size() / 2;
    for (std::size_t j = 0; j < row.positive_levels.size(); ++j)
      CHECK(std::abs(cb.levels[half + j] - row.positive_levels[j]) < 1.5e-4);
    CHECK(std::abs(cb.mse - row.max_mse) < 5e-4 * row.max_mse);
    CHECK(std::abs(cb.mse - row.exact_mse) < 1e-9);
  }
  // 4 bits: Max's outermost level, then every level against the 30-digit reference.
  const kvq::Codebook cb4 = kvq::lloyd_max_gaussian(4);
  CHECK(std::abs(cb4.levels.back() - 2.7326) < 1e-4);
  const double exact4[] = {0.1283950299, 0.3880482995, 0.6567591185, 0.9423404565,
                           1.256231197,  1.618046386,  2.069017227,  2.732589571};
  for (std::size_t j = 0; j < 8; ++j) CHECK(std::abs(cb4.levels[8 + j] - exact4[j]) < 1e-8);
}

TEST_CASE("Gaussian 1-bit codebook has its closed form", "[codec][lloyd_max]") {
  // Optimal 1-bit: ±E|x| = ±sqrt(2/pi), MSE = 1 - 2/pi.
  const kvq::Codebook cb = kvq::lloyd_max_gaussian(1);
  CHECK(cb.levels[1] == Approx(std::sqrt(2.0 / std::numbers::pi)).epsilon(1e-12));
  CHECK(cb.mse == Approx(1.0 - 2.0 / std::numbers::pi).epsilon(1e-12));
}

TEST_CASE("Sphere density is normalized with unit variance", "[codec][lloyd_max]") {
  for (std::size_t d : {3u, 4u, 5u, 16u, 64u, 96u, 256u, 4096u}) {
    INFO("dim " << d);
    const kvq::detail::SphereDensity f(d);
    const auto m = f.moments(-std::sqrt(double(d)), std::sqrt(double(d)));
    CHECK(std::abs(m.p - 1.0) < 1e-12);
    CHECK(std::abs(m.m1) < 1e-12);
    CHECK(std::abs(m.m2 - 1.0) < 1e-12);
  }
}

TEST_CASE("Sphere codebook at d = 3 is the uniform quantizer", "[codec][lloyd_max]") {
  // Archimedes: one coordinate of a uniform point on S^2 is uniform on [-1, 1],
  // so sqrt(3)·u is uniform on [-sqrt(3), sqrt(3)]: equal cells, MSE = step^2/12.
  for (int bits = 1; bits <= 4; ++bits) {
    INFO("bits " << bits);
    const kvq::Codebook cb = kvq::lloyd_max_sphere(bits, 3);
    check_shape(cb, bits);
    const double n = double(cb.levels.size()), step = 2.0 * std::sqrt(3.0) / n;
    for (std::size_t i = 0; i < cb.levels.size(); ++i)
      CHECK(std::abs(cb.levels[i] - (-std::sqrt(3.0) + (i + 0.5) * step)) < 1e-9);
    CHECK(std::abs(cb.mse - step * step / 12.0) < 1e-11);
  }
}

TEST_CASE("Sphere codebook approaches the Gaussian one as d grows", "[codec][lloyd_max]") {
  for (int bits = 1; bits <= 4; ++bits) {
    INFO("bits " << bits);
    const kvq::Codebook g = kvq::lloyd_max_gaussian(bits);
    double previous = 1e9;
    for (std::size_t d : {8u, 32u, 128u, 512u, 4096u}) {
      INFO("dim " << d);
      const kvq::Codebook s = kvq::lloyd_max_sphere(bits, d);
      check_shape(s, bits);
      double gap = 0.0;
      for (std::size_t i = 0; i < g.levels.size(); ++i)
        gap = std::max(gap, std::abs(s.levels[i] - g.levels[i]));
      CHECK(gap < previous);  // monotone convergence
      // The sphere coordinate has lighter tails: from 2 bits on its optimal
      // quantizer is narrower (at 1 bit the level is E|x|, slightly larger).
      if (bits >= 2) CHECK(s.levels.back() < g.levels.back());
      CHECK(s.mse < g.mse);
      previous = gap;
    }
    CHECK(previous < 2e-3);  // O(1/d): 1.4e-3 at d = 4096 for 4 bits
  }
}

TEST_CASE("Sphere codebook MSE matches a Monte-Carlo estimate", "[codec][lloyd_max]") {
  // Quantize sqrt(d)·(coordinates of random unit vectors): exactly what a turbo
  // codec sees after rotating a normalized vector.
  kvq::Rng rng(2024);
  for (std::size_t d : {16u, 64u, 128u}) {
    const int vectors = static_cast<int>(400000 / d);
    std::vector<double> x(d);
    for (int bits = 2; bits <= 4; ++bits) {
      INFO("dim " << d << " bits " << bits);
      const kvq::Codebook s = kvq::lloyd_max_sphere(bits, d);
      const kvq::Codebook g = kvq::lloyd_max_gaussian(bits);
      double err_s = 0.0, err_g = 0.0;
      for (int v = 0; v < vectors; ++v) {
        double n2 = 0.0;
        for (auto& xi : x) {
          xi = rng.normal();
          n2 += xi * xi;
        }
        const double scale = std::sqrt(double(d) / n2);
        for (double xi : x) {
          const double y = xi * scale;
          err_s += (y - quantize(s, y)) * (y - quantize(s, y));
          err_g += (y - quantize(g, y)) * (y - quantize(g, y));
        }
      }
      const double samples = double(vectors) * d;
      const double mse_s = err_s / samples, mse_g = err_g / samples;
      CHECK(std::abs(mse_s - s.mse) < 0.02 * s.mse);
      if (d == 16) CHECK(mse_s < mse_g);  // the sphere codebook is the better one
    }
  }
}

TEST_CASE("Shipped Lloyd-Max tables equal the solver output", "[codec][lloyd_max]") {
  for (int bits = 1; bits <= 4; ++bits) {
    INFO("bits " << bits);
    const float* g = kvq::lloyd_max_gaussian_levels(bits);
    REQUIRE(g != nullptr);
    const kvq::Codebook cg = kvq::lloyd_max_gaussian(bits);
    for (std::size_t i = 0; i < cg.levels.size(); ++i) CHECK(std::abs(g[i] - cg.levels[i]) < 1e-6);
    for (std::size_t d : kvq::kLloydMaxTableDims) {
      INFO("dim " << d);
      const float* t = kvq::lloyd_max_levels(bits, d);
      REQUIRE(t != nullptr);
      const kvq::Codebook cs = kvq::lloyd_max_sphere(bits, d);
      for (std::size_t i = 0; i < cs.levels.size(); ++i)
        CHECK(std::abs(t[i] - cs.levels[i]) < 1e-6);
    }
  }
  const std::size_t dims[] = {64, 80, 96, 112, 128, 256};
  CHECK(std::equal(std::begin(dims), std::end(dims), std::begin(kvq::kLloydMaxTableDims),
                   std::end(kvq::kLloydMaxTableDims)));
}

TEST_CASE("Lloyd-Max table lookup returns nullptr when not shipped", "[codec][lloyd_max]") {
  CHECK(kvq::lloyd_max_levels(3, 100) == nullptr);
  CHECK(kvq::lloyd_max_levels(3, 0) == nullptr);
  CHECK(kvq::lloyd_max_levels(5, 128) == nullptr);
  CHECK(kvq::lloyd_max_levels(0, 128) == nullptr);
  CHECK(kvq::lloyd_max_gaussian_levels(0) == nullptr);
  CHECK(kvq::lloyd_max_gaussian_levels(5) == nullptr);
  CHECK(kvq::lloyd_max_levels(4, 128) != kvq::lloyd_max_levels(4, 64));
}

TEST_CASE("Lloyd-Max rejects bad arguments", "[codec][lloyd_max]") {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const kvq::Error& e) {
      return e.code();
    }
    return kvq::Errc::io_error;  // sentinel: nothing thrown
  };
  for (int bits : {0, 5, -1}) {
    INFO("bits " << bits);
    CHECK(code_of([&] { kvq::lloyd_max_gaussian(bits); }) == kvq::Errc::invalid_argument);
    CHECK(code_of([&] { kvq::lloyd_max_sphere(bits, 128); }) == kvq::Errc::invalid_argument);
  }
  for (std::size_t d : {0u, 1u, 2u})
    CHECK(code_of([&] { kvq::lloyd_max_sphere(2, d); }) == kvq::Errc::invalid_argument);
}
