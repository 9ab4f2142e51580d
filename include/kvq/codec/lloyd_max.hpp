// Lloyd-Max scalar quantizers: the MSE-optimal b-bit codebook of a known
// distribution.
//
// Turbo codecs rotate a vector so that each coordinate of the (normalized,
// sqrt(d)-scaled) result follows a fixed, known distribution, then quantize
// every coordinate with one codebook. The codebook must be optimal for *that*
// distribution: published tables have been wrong before, so kvq derives its
// codebooks here and pins them against Max (1960) in the tests.
//
// Two distributions are supported, both with unit variance:
//  - the standard Gaussian (the d -> infinity limit), with closed-form moments;
//  - one coordinate of a uniformly random unit vector in R^d, scaled by
//    sqrt(d): x = sqrt(d)·u, u with density ∝ (1-u^2)^((d-3)/2) on [-1, 1].
//    This is exactly what a rotated, normalized head vector looks like; for
//    small d it has lighter tails than the Gaussian.
// The solver is Lloyd's fixed-point iteration (centroid <-> midpoint) on the
// positive half-line, mirrored: both densities are symmetric and log-concave
// (d >= 3), so the optimum is unique and symmetric. Sphere moments are
// integrated with composite Gauss-Legendre after substituting u = cos(theta),
// which turns the density into sin^(d-2)(theta): smooth for every d, even where
// (1-u^2)^((d-3)/2) has non-smooth endpoints (d = 4, 5, ...). A codebook takes
// from microseconds (Gaussian) to ~5 ms (sphere, 4 bits) on one core.
#pragma once

#include <kvq/core/error.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

namespace kvq {

struct Codebook {
  int bits = 0;
  std::vector<double> levels;      // 2^bits reconstruction values, ascending
  std::vector<double> thresholds;  // 2^bits - 1 decision boundaries (midpoints of levels)
  double mse = 0.0;                // E[(x - Q(x))^2] for the unit-variance distribution
};

namespace detail {

// Mass and first two moments of a density restricted to an interval.
struct CellMoments {
  double p = 0.0;   // ∫ f
  double m1 = 0.0;  // ∫ x f
  double m2 = 0.0;  // ∫ x^2 f
};

// n-point Gauss-Legendre rule on [-1, 1], computed by Newton iteration on P_n.
template <int N>
struct GaussLegendre {
  std::array<double, N> x{}, w{};
  GaussLegendre() {
    for (int i = 0; i < N; ++i) {
      double z = std::cos(std::numbers::pi * (i + 0.75) / (N + 0.5));
      double dp = 1.0;
      for (int iter = 0; iter < 100; ++iter) {
        double p0 = 1.0, p1 = z;  // P_0, P_1
        for (int k = 2; k <= N; ++k) {
          const double p2 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p0) / k;
          p0 = p1;
          p1 = p2;
        }
        dp = N * (z * p1 - p0) / (z * z - 1.0);  // P_N'(z)
        const double step = p1 / dp;
        z -= step;
        if (std::abs(step) < 1e-16) break;
      }
      x[i] = z;
      w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
    }
  }
};

inline const GaussLegendre<16>& gauss_legendre16() {
  static const GaussLegendre<16> rule;
  return rule;
}

// Standard Gaussian: closed forms via erfc (accurate in the tails).
struct GaussianDensity {
  static double pdf(double x) {
    if (std::isinf(x)) return 0.0;
    return std::exp(-0.5 * x * x) / std::sqrt(2.0 * std::numbers::pi);
  }
  static double cdf(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }
  // x·pdf(x), which is 0 at ±infinity.
  static double xpdf(double x) { return std::isinf(x) ? 0.0 : x * pdf(x); }

  double upper() const { return std::numeric_limits<double>::infinity(); }

  CellMoments moments(double a, double b) const {
    CellMoments m;
    m.p = cdf(b) - cdf(a);
    m.m1 = pdf(a) - pdf(b);
    m.m2 = m.p + xpdf(a) - xpdf(b);
    return m;
  }
  // ∫_a^b (x - c)^2 φ(x) dx, written to avoid cancellation between m2 and c·m1.
  double squared_error(double a, double b, double c) const {
    const double p = cdf(b) - cdf(a);
    const double ta = std::isinf(a) ? 0.0 : (a - 2.0 * c) * pdf(a);
    const double tb = std::isinf(b) ? 0.0 : (b - 2.0 * c) * pdf(b);
    return (1.0 + c * c) * p + ta - tb;
  }
};

// sqrt(d) times one coordinate of a uniform random unit vector in R^d.
class SphereDensity {
 public:
  explicit SphereDensity(std::size_t dim) : d_(static_cast<double>(dim)), root_d_(std::sqrt(d_)) {
    // Panels no wider than the density's bulk in θ (width ~ 1/sqrt(d)).
    panel_ = std::min(0.25, 1.5 / root_d_);
    // Normalize with the same quadrature rather than through lgamma: the
    // closed form sqrt(π) Γ((d-1)/2) / Γ(d/2) loses digits to cancellation
    // for large d, while the quadrature is exact to rounding.
    double mass = 0.0;
    integrate(-root_d_, root_d_, [&](double, double w) { mass += w; });
    log_norm_ = -std::log(mass);
  }

  double upper() const { return root_d_; }

  CellMoments moments(double a, double b) const {
    CellMoments m;
    integrate(a, b, [&](double x, double w) {
      m.p += w;
      m.m1 += w * x;
      m.m2 += w * x * x;
    });
    return m;
  }
  double squared_error(double a, double b, double c) const {
    double e = 0.0;
    integrate(a, b, [&](double x, double w) { e += w * (x - c) * (x - c); });
    return e;
  }

 private:
  // Calls f(x, weight) at quadrature nodes covering [a, b] ⊂ [-sqrt(d), sqrt(d)];
  // the weights already include the density.
  template <class F>
  void integrate(double a, double b, F&& f) const {
    // Beyond |x| = 40 the density is below exp(-800): skipping it keeps the
    // panel count bounded for very large d.
    const double edge = std::min(root_d_, 40.0);
    a = std::clamp(a, -edge, edge);
    b = std::clamp(b, -edge, edge);
    if (!(b > a)) return;
    // x = sqrt(d)·cos θ, dx·f(x) = C sin^(d-2) θ dθ, θ decreasing in x.
    const double lo = std::acos(b / root_d_), hi = std::acos(a / root_d_);
    const auto& gl = gauss_legendre16();
    const int panels = std::max(1, static_cast<int>(std::ceil((hi - lo) / panel_)));
    const double h = (hi - lo) / panels;
    for (int k = 0; k < panels; ++k) {
      const double mid = lo + (k + 0.5) * h;
      for (std::size_t i = 0; i < gl.x.size(); ++i) {
        const double theta = mid + 0.5 * h * gl.x[i];
        const double s = std::sin(theta);
        const double w = 0.5 * h * gl.w[i] * std::exp(log_norm_ + (d_ - 2.0) * std::log(s));
        f(root_d_ * std::cos(theta), w);
      }
    }
  }

  double d_, root_d_, log_norm_ = 0.0, panel_ = 0.25;
};

// Lloyd iteration on the positive half; the negative half is the mirror image.
template <class Density>
Codebook solve_lloyd_max(int bits, const Density& density) {
  const std::size_t half = std::size_t{1} << (bits - 1);
  const double top = density.upper();

  // Symmetric start: uniform spacing over roughly ±3 (inside the support).
  std::vector<double> c(half);
  const double span = std::min(3.0, 0.9 * top);
  for (std::size_t j = 0; j < half; ++j) c[j] = span * (j + 0.5) / half;

  std::vector<double> t(half + 1);  // cell boundaries on [0, top]
  auto boundaries = [&] {
    t[0] = 0.0;
    for (std::size_t j = 1; j < half; ++j) t[j] = 0.5 * (c[j - 1] + c[j]);
    t[half] = top;
  };

  constexpr double tolerance = 1e-13;
  constexpr int max_iterations = 100000;
  for (int iter = 0; iter < max_iterations; ++iter) {
    boundaries();
    double change = 0.0;
    for (std::size_t j = 0; j < half; ++j) {
      const CellMoments m = density.moments(t[j], t[j + 1]);
      if (!(m.p > 0.0)) continue;  // empty cell (cannot happen for these densities)
      const double centroid = m.m1 / m.p;
      change = std::max(change, std::abs(centroid - c[j]));
      c[j] = centroid;
    }
    if (change < tolerance) break;
  }
  boundaries();

  Codebook cb;
  cb.bits = bits;
  cb.levels.resize(2 * half);
  for (std::size_t j = 0; j < half; ++j) {
    cb.levels[half + j] = c[j];
    cb.levels[half - 1 - j] = -c[j];
  }
  cb.thresholds.resize(2 * half - 1);
  for (std::size_t j = 0; j + 1 < cb.levels.size(); ++j)
    cb.thresholds[j] = 0.5 * (cb.levels[j] + cb.levels[j + 1]);
  double half_mse = 0.0;
  for (std::size_t j = 0; j < half; ++j) half_mse += density.squared_error(t[j], t[j + 1], c[j]);
  cb.mse = 2.0 * half_mse;
  return cb;
}

inline void check_lloyd_max_bits(int bits) {
  if (bits < 1 || bits > 4)
    fail(Errc::invalid_argument,
         "Lloyd-Max codebook: bits must be 1..4, got " + std::to_string(bits));
}

}  // namespace detail

// MSE-optimal codebook for the standard Gaussian (Max 1960), bits = 1..4.
inline Codebook lloyd_max_gaussian(int bits) {
  detail::check_lloyd_max_bits(bits);
  return detail::solve_lloyd_max(bits, detail::GaussianDensity{});
}

// MSE-optimal codebook for sqrt(dim) times one coordinate of a uniformly random
// unit vector in R^dim (unit variance), bits = 1..4, dim >= 3.
inline Codebook lloyd_max_sphere(int bits, std::size_t dim) {
  detail::check_lloyd_max_bits(bits);
  if (dim < 3)
    detail::fail(Errc::invalid_argument,
                 "Lloyd-Max sphere codebook: dim must be >= 3, got " + std::to_string(dim));
  return detail::solve_lloyd_max(bits, detail::SphereDensity(dim));
}

}  // namespace kvq
