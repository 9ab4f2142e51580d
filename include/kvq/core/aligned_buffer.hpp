// A heap buffer of trivially copyable elements, aligned for the widest SIMD loads.
//
// Compressed caches are read by SIMD kernels; 64-byte alignment (one AVX-512
// register, one cache line on x86) keeps the row starts of power-of-two formats
// on cache-line boundaries. Contents are zero-initialized so a buffer never
// exposes stale memory (snapshot bytes, fuzzers).
#pragma once

#include <kvq/core/error.hpp>

#include <cstddef>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

namespace kvq {

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data");

 public:
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { resize(n); }
  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_) std::memcpy(data_, other.data_, size_ * sizeof(T));
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer other) noexcept {
    swap(other);
    return *this;
  }
  ~AlignedBuffer() { release(); }

  void swap(AlignedBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }

  // Keeps the first min(size, n) elements; new elements are zero.
  void resize(std::size_t n) {
    if (n == size_) return;
    detail::require(n <= std::numeric_limits<std::size_t>::max() / sizeof(T) - kAlignment,
                    Errc::invalid_argument, "AlignedBuffer: size overflows");
    T* fresh = nullptr;
    if (n) {
      fresh = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{kAlignment}));
      std::memset(static_cast<void*>(fresh), 0, n * sizeof(T));
      if (size_) std::memcpy(static_cast<void*>(fresh), data_, (n < size_ ? n : size_) * sizeof(T));
    }
    release();
    data_ = fresh;
    size_ = n;
  }
  void clear() noexcept { release(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

 private:
  void release() noexcept {
    if (data_) ::operator delete(static_cast<void*>(data_), std::align_val_t{kAlignment});
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace kvq
