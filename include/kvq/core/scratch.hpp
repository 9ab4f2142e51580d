// Per-call working memory: on the stack for the usual sizes, on the heap
// beyond, so hot paths (encode, kernel wrappers) do not allocate for typical
// head sizes.
#pragma once

#include <array>
#include <cstddef>
#include <vector>

namespace kvq::detail {

template <class T, std::size_t StackElems>
class Scratch {
 public:
  explicit Scratch(std::size_t n) {
    if (n > StackElems) large_.resize(n);
    data_ = n > StackElems ? large_.data() : small_.data();
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }

 private:
  std::array<T, StackElems> small_;  // uninitialized on purpose: callers write before reading
  std::vector<T> large_;
  T* data_ = nullptr;
};

}  // namespace kvq::detail
