// The rotation a turbo codec holds: randomized Hadamard when the head
// dimension is a power of two (O(d log d), O(d) memory), a dense Haar-random
// orthogonal matrix otherwise (O(d^2)). Both are orthonormal, so codecs and
// kernels need not care which one they got: dot products and norms are the
// same in rotated space, and (dim, seed) fully determine the rotation.
//
// A dense matrix is built once per (dim, seed) and process, and shared by
// every Rotation of that (dim, seed) while one is alive: a 28-layer cache at
// head_dim 640 holds 56 turbo codecs, which would otherwise build 56 matrices
// (0.1 s each) and hold 56 copies (1.6 MB each). Building is O(d^3)
// (docs/FORMATS.md gives the times); sharing is thread-safe.
#pragma once

#include <kvq/rotation/hadamard.hpp>
#include <kvq/rotation/orthogonal.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <variant>

namespace kvq {

namespace detail {
// The live dense rotation of (dim, seed), built on first use. The map holds
// weak references, so a matrix is freed with its last codec; the lock is held
// while building, so concurrent first uses build it once.
inline std::shared_ptr<const RandomOrthogonal> shared_orthogonal(std::size_t dim, std::uint64_t seed) {
  static std::mutex mutex;
  static std::map<std::pair<std::size_t, std::uint64_t>, std::weak_ptr<const RandomOrthogonal>> live;
  const std::lock_guard<std::mutex> lock(mutex);
  auto& slot = live[{dim, seed}];
  if (auto q = slot.lock()) return q;
  auto q = std::make_shared<const RandomOrthogonal>(dim, seed);
  slot = q;
  return q;
}
}  // namespace detail

class Rotation {
 public:
  Rotation(std::size_t dim, std::uint64_t seed) : impl_(make(dim, seed)) {}

  std::size_t dim() const noexcept {
    return std::visit([](const auto& r) { return get(r).dim(); }, impl_);
  }
  std::uint64_t seed() const noexcept {
    return std::visit([](const auto& r) { return get(r).seed(); }, impl_);
  }
  bool is_hadamard() const noexcept {
    return std::holds_alternative<RandomizedHadamard>(impl_);
  }
  // The shared dense matrix, or nullptr for a Hadamard rotation.
  const RandomOrthogonal* dense() const noexcept {
    const auto* p = std::get_if<std::shared_ptr<const RandomOrthogonal>>(&impl_);
    return p ? p->get() : nullptr;
  }

  // Rotate into the codec's space. `in` and `out` may be the same buffer.
  void forward(const float* in, float* out) const {
    std::visit([&](const auto& r) { get(r).forward(in, out); }, impl_);
  }
  // Rotate back; exact inverse of forward up to float rounding.
  void inverse(const float* in, float* out) const {
    std::visit([&](const auto& r) { get(r).inverse(in, out); }, impl_);
  }

 private:
  using Impl = std::variant<RandomizedHadamard, std::shared_ptr<const RandomOrthogonal>>;
  static Impl make(std::size_t dim, std::uint64_t seed) {
    if (dim == 0) detail::fail(Errc::invalid_argument, "Rotation: dim must be >= 1, got 0");
    if (detail::is_power_of_two(dim)) return RandomizedHadamard(dim, seed);
    return detail::shared_orthogonal(dim, seed);
  }
  static const RandomizedHadamard& get(const RandomizedHadamard& r) noexcept { return r; }
  static const RandomOrthogonal& get(const std::shared_ptr<const RandomOrthogonal>& r) noexcept { return *r; }
  Impl impl_;
};

}  // namespace kvq
