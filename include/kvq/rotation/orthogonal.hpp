// Dense Haar-random orthogonal rotation, for head dimensions that are not a
// power of two (80, 96, 112, ...), where no Walsh-Hadamard matrix exists.
//
// It plays the same role as RandomizedHadamard (make every rotated coordinate
// follow one known distribution, whatever the input) at O(d^2) cost per
// vector. The matrix is drawn uniformly from the orthogonal group: QR of a
// d x d standard Gaussian matrix (kvq::Rng::normal, row-major fill), with the
// columns of Q multiplied by sign(R_ii) -- without that fix Q is not Haar
// distributed, because Householder QR makes its own sign choices.
//
// The matrix is built in double and stored as float (row-major). The Gaussian
// draws go through libm, so a matrix may differ in the last float ulp between
// platforms; it is regenerated from (dim, seed) and never stored in a cache.
#pragma once

#include <kvq/core/error.hpp>
#include <kvq/core/rng.hpp>

#include <Eigen/QR>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

class RandomOrthogonal {
 public:
  RandomOrthogonal(std::size_t dim, std::uint64_t seed) : dim_(dim), seed_(seed) {
    if (dim == 0) detail::fail(Errc::invalid_argument, "RandomOrthogonal: dim must be >= 1, got 0");
    const auto n = static_cast<Eigen::Index>(dim);
    Eigen::MatrixXd a(n, n);
    Rng rng(seed);
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) a(i, j) = rng.normal();

    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    const Eigen::MatrixXd q = qr.householderQ();
    const Eigen::MatrixXd& r = qr.matrixQR();  // R is its upper triangle

    matrix_.resize(dim * dim);
    for (Eigen::Index j = 0; j < n; ++j) {
      const double s = r(j, j) < 0.0 ? -1.0 : 1.0;
      for (Eigen::Index i = 0; i < n; ++i)
        matrix_[static_cast<std::size_t>(i) * dim + static_cast<std::size_t>(j)] =
            static_cast<float>(s * q(i, j));
    }
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
