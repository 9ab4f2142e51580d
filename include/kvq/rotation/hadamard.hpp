// Randomized Hadamard rotation for power-of-two dimensions.
//
// Turbo codecs quantize each coordinate of a rotated vector with one scalar
// codebook. That only works if, after rotation, every coordinate follows the
// same known distribution whatever the input looked like (outlier channels
// included). A random sign flip D followed by the orthonormal Walsh-Hadamard
// matrix H/sqrt(d) achieves this in O(d log d) time and O(d) storage: the
// rotation is x -> H·D·x / sqrt(d). The sign flip comes first on purpose: it is
// what makes the result data-oblivious (H alone maps a basis vector to a flat
// vector, but maps a flat vector back to a spike).
//
// The signs are a pure function of the seed (kvq::Rng::sign, bit-exact on every
// platform), so a stored cache can be decoded anywhere from (dim, seed).
#pragma once

#include <kvq/core/error.hpp>
#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

namespace detail {
constexpr bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

// In-place unnormalized fast Walsh-Hadamard transform (Sylvester ordering).
inline void walsh_hadamard(float* v, std::size_t n) noexcept {
  for (std::size_t half = 1; half < n; half *= 2) {
    for (std::size_t block = 0; block < n; block += 2 * half) {
      for (std::size_t i = block; i < block + half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a + b;
        v[i + half] = a - b;
      }
    }
  }
}
}  // namespace detail

class RandomizedHadamard {
 public:
  RandomizedHadamard(std::size_t dim, std::uint64_t seed) : dim_(dim), seed_(seed) {
    if (!detail::is_power_of_two(dim))
      detail::fail(Errc::invalid_argument,
                   "RandomizedHadamard: dim must be a power of two >= 1, got " +
                       std::to_string(dim));
    signs_.resize(dim);
    Rng rng(seed);
    for (float& s : signs_) s = rng.sign();
    scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
  }

  std::size_t dim() const noexcept { return dim_; }
  std::uint64_t seed() const noexcept { return seed_; }
  // The diagonal of D (+1/-1), in coordinate order.
  const std::vector<float>& signs() const noexcept { return signs_; }

  // out = H·D·in / sqrt(dim). `in` and `out` may be the same buffer.
  void forward(const float* in, float* out) const noexcept {
    for (std::size_t i = 0; i < dim_; ++i) out[i] = in[i] * signs_[i];
    detail::walsh_hadamard(out, dim_);
    for (std::size_t i = 0; i < dim_; ++i) out[i] *= scale_;
  }

  // out = D·H·in / sqrt(dim), the exact inverse of forward (H is symmetric and
  // H·H = dim·I). `in` and `out` may be the same buffer.
  void inverse(const float* in, float* out) const noexcept {
    if (out != in)
      for (std::size_t i = 0; i < dim_; ++i) out[i] = in[i];
    detail::walsh_hadamard(out, dim_);
    for (std::size_t i = 0; i < dim_; ++i) out[i] *= scale_ * signs_[i];
  }

 private:
  std::size_t dim_;
  std::uint64_t seed_;
  float scale_ = 1.0f;
  std::vector<float> signs_;
};

}  // namespace kvq
