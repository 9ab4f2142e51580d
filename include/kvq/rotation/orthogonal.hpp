// Dense Haar-random orthogonal rotation, for head dimensions that are not a
// power of two (80, 96, 112, ...), where no Walsh-Hadamard matrix exists.
//
// It plays the same role as RandomizedHadamard (make every rotated coordinate
// follow one known distribution, whatever the input) at O(d^2) cost per
// vector. The matrix is drawn uniformly from the orthogonal group: Q of the QR
// factorization of a d x d standard Gaussian matrix A (kvq::Rng::normal,
// row-major fill) whose R has a positive diagonal. That Q is unique, so any
// QR algorithm gives the same matrix up to rounding; without the sign
// convention Q is not Haar distributed, because Householder QR makes its own
// sign choices.
//
// The factorization is kvq's own Householder QR in double on column-major
// storage (every inner loop a contiguous dot product or axpy), not Eigen's:
// it costs the same 8/3 d^3 flops, keeps Eigen out of the library's headers,
// and stays fast without an optimizer (Eigen's expression templates are
// ~700x slower at -O0, which made a turbo codec at head_dim 640 take 29 s in
// the sanitized fuzz build). Building costs are in docs/FORMATS.md.
//
// The matrix is stored as float (row-major). The Gaussian draws go through
// libm and the QR's rounding differs from other implementations', so a matrix
// may differ in the last float ulp between platforms or versions; it is
// regenerated from (dim, seed) and never stored in a cache.
#pragma once

#include <kvq/core/error.hpp>
#include <kvq/core/rng.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

namespace detail {
// x[from, n) . y[from, n) and y[from, n) -= s * x[from, n).
// Four partial sums: a single chain would run at one add per FP latency.
inline double householder_dot(const double* x, const double* y, std::size_t from, std::size_t n) noexcept {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::size_t i = from;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i] * y[i];
    s1 += x[i + 1] * y[i + 1];
    s2 += x[i + 2] * y[i + 2];
    s3 += x[i + 3] * y[i + 3];
  }
  for (; i < n; ++i) s0 += x[i] * y[i];
  return (s0 + s1) + (s2 + s3);
}
inline void householder_axpy(double s, const double* x, double* y, std::size_t from, std::size_t n) noexcept {
  for (std::size_t i = from; i < n; ++i) y[i] -= s * x[i];
}

// Q (column-major, q[j * n + i] = Q(i, j)) of A = QR with R_jj >= 0, for
// column-major A (overwritten by the Householder vectors).
inline std::vector<double> householder_q(std::vector<double>& a, std::size_t n) {
  std::vector<double> beta(n, 0.0), sign(n, 1.0);
  for (std::size_t k = 0; k < n; ++k) {
    double* v = &a[k * n];
    const double tail = householder_dot(v, v, k + 1, n), x0 = v[k];
    const double norm = std::sqrt(x0 * x0 + tail);
    if (norm == 0.0) continue;  // H_k = I, R_kk = 0
    // H_k x = alpha e_k with alpha of the sign opposite to x0 (no cancellation); R_kk = alpha.
    const double alpha = x0 >= 0.0 ? -norm : norm;
    sign[k] = alpha < 0.0 ? -1.0 : 1.0;
    v[k] = x0 - alpha;
    beta[k] = 2.0 / (v[k] * v[k] + tail);
    for (std::size_t j = k + 1; j < n; ++j) householder_axpy(beta[k] * householder_dot(v, &a[j * n], k, n), v, &a[j * n], k, n);
  }
  // Q = H_0 H_1 ... H_{n-1}, accumulated backwards: H_k..H_{n-1} only touch
  // rows and columns >= k. Column j is then multiplied by sign(R_jj).
  std::vector<double> q(n * n, 0.0);
  for (std::size_t j = 0; j < n; ++j) q[j * n + j] = 1.0;
  for (std::size_t k = n; k-- > 0;) {
    if (beta[k] == 0.0) continue;
    const double* v = &a[k * n];
    for (std::size_t j = k; j < n; ++j) householder_axpy(beta[k] * householder_dot(v, &q[j * n], k, n), v, &q[j * n], k, n);
  }
  for (std::size_t j = 0; j < n; ++j)
    if (sign[j] < 0.0)
      for (std::size_t i = 0; i < n; ++i) q[j * n + i] = -q[j * n + i];
  return q;
}
}  // namespace detail

class RandomOrthogonal {
 public:
  RandomOrthogonal(std::size_t dim, std::uint64_t seed) : dim_(dim), seed_(seed) {
    if (dim == 0) detail::fail(Errc::invalid_argument, "RandomOrthogonal: dim must be >= 1, got 0");
    std::vector<double> a(dim * dim);  // column-major: a[j * dim + i] = A(i, j)
    Rng rng(seed);
    for (std::size_t i = 0; i < dim; ++i)
      for (std::size_t j = 0; j < dim; ++j) a[j * dim + i] = rng.normal();
    const std::vector<double> q = detail::householder_q(a, dim);
    matrix_.resize(dim * dim);
    for (std::size_t i = 0; i < dim; ++i)
      for (std::size_t j = 0; j < dim; ++j) matrix_[i * dim + j] = static_cast<float>(q[j * dim + i]);
  }

  std::size_t dim() const noexcept { return dim_; }
  std::uint64_t seed() const noexcept { return seed_; }
  // Q, row-major, dim x dim.
  const std::vector<float>& matrix() const noexcept { return matrix_; }

  // out = Q·in. `in` and `out` may be the same buffer.
  void forward(const float* in, float* out) const {
    apply(in, out, /*transpose=*/false);
  }

  // out = Qᵀ·in, the inverse of forward. `in` and `out` may be the same buffer.
  void inverse(const float* in, float* out) const {
    apply(in, out, /*transpose=*/true);
  }

 private:
  void apply(const float* in, float* out, bool transpose) const {
    // Aliasing: copy the input first (on the stack for the usual head sizes).
    std::array<float, 256> small;
    std::vector<float> large;
    const float* x = in;
    if (in == out) {
      float* copy = small.data();
      if (dim_ > small.size()) {
        large.assign(in, in + dim_);
        copy = large.data();
      } else {
        for (std::size_t i = 0; i < dim_; ++i) copy[i] = in[i];
      }
      x = copy;
    }
    if (!transpose) {
      for (std::size_t i = 0; i < dim_; ++i) {
        const float* row = &matrix_[i * dim_];
        float acc = 0.0f;
        for (std::size_t j = 0; j < dim_; ++j) acc += row[j] * x[j];
        out[i] = acc;
      }
    } else {
      for (std::size_t j = 0; j < dim_; ++j) out[j] = 0.0f;
      for (std::size_t i = 0; i < dim_; ++i) {
        const float* row = &matrix_[i * dim_];
        const float xi = x[i];
        for (std::size_t j = 0; j < dim_; ++j) out[j] += row[j] * xi;
      }
    }
  }

  std::size_t dim_;
  std::uint64_t seed_;
  std::vector<float> matrix_;
};

}  // namespace kvq
