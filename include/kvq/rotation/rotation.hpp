// The rotation a turbo codec holds: randomized Hadamard when the head
// dimension is a power of two (O(d log d), O(d) memory), a dense Haar-random
// orthogonal matrix otherwise (O(d^2)). Both are orthonormal, so codecs and
// kernels need not care which one they got: dot products and norms are the
// same in rotated space, and (dim, seed) fully determine the rotation.
#pragma once

#include <kvq/rotation/hadamard.hpp>
#include <kvq/rotation/orthogonal.hpp>

#include <cstddef>
#include <cstdint>
#include <variant>

namespace kvq {

class Rotation {
 public:
  Rotation(std::size_t dim, std::uint64_t seed) : impl_(make(dim, seed)) {}

  std::size_t dim() const noexcept {
    return std::visit([](const auto& r) { return r.dim(); }, impl_);
  }
  std::uint64_t seed() const noexcept {
    return std::visit([](const auto& r) { return r.seed(); }, impl_);
  }
  bool is_hadamard() const noexcept {
    return std::holds_alternative<RandomizedHadamard>(impl_);
  }

  // Rotate into the codec's space. `in` and `out` may be the same buffer.
  void forward(const float* in, float* out) const {
    std::visit([&](const auto& r) { r.forward(in, out); }, impl_);
  }
  // Rotate back; exact inverse of forward up to float rounding.
  void inverse(const float* in, float* out) const {
    std::visit([&](const auto& r) { r.inverse(in, out); }, impl_);
  }

 private:
  using Impl = std::variant<RandomizedHadamard, RandomOrthogonal>;
  static Impl make(std::size_t dim, std::uint64_t seed) {
    if (dim == 0) detail::fail(Errc::invalid_argument, "Rotation: dim must be >= 1, got 0");
    if (detail::is_power_of_two(dim)) return RandomizedHadamard(dim, seed);
    return RandomOrthogonal(dim, seed);
  }
  Impl impl_;
};

}  // namespace kvq
