// ExactF32 / ExactF16: the "codecs" of the uncompressed recent window and sinks.
//
// Making exact storage a Codec lets the attention driver treat every stretch of
// the cache the same way (segments of tiles read through a codec), so the
// window needs no second code path and the kernel layer replaces one loop.
// They are also accepted as codec names ("f32", "f16") anywhere a CacheSpec
// names a codec, e.g. f16 V on boundary layers.
#pragma once

#include <kvq/codec/codec.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace kvq {

class ExactF32 {
 public:
  static constexpr std::string_view name = "f32";
  explicit ExactF32(std::size_t head_dim) : head_dim_(head_dim) {
    detail::require(head_dim > 0, Errc::shape_mismatch, "f32: head_dim must be positive");
  }
  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t tokens_per_tile() const noexcept { return 1; }
  std::size_t bytes_per_tile() const noexcept { return 4 * head_dim_; }
  void encode_tile(const float* x, std::byte* out) const {
    detail::require_finite(x, head_dim_, name);
    for (std::size_t i = 0; i < head_dim_; ++i) bits::store_f32(out + 4 * i, x[i]);
  }
  void decode_tile(const std::byte* in, float* y) const {
    for (std::size_t i = 0; i < head_dim_; ++i) y[i] = bits::load_f32(in + 4 * i);
  }
  void prepare_query(const float* q, float* q_work) const { std::copy_n(q, head_dim_, q_work); }
  void scores(const float* q_work, const std::byte* tile, float* out) const {
    float s = 0.0f;
    for (std::size_t i = 0; i < head_dim_; ++i) s += q_work[i] * bits::load_f32(tile + 4 * i);
    out[0] = s;
  }
  void accumulate(float* acc, const float* w, const std::byte* tile) const {
    for (std::size_t i = 0; i < head_dim_; ++i) acc[i] += w[0] * bits::load_f32(tile + 4 * i);
  }
  void finish_output(const float* acc, float* out) const { std::copy_n(acc, head_dim_, out); }

 private:
  std::size_t head_dim_;
};

class ExactF16 {
 public:
  static constexpr std::string_view name = "f16";
  explicit ExactF16(std::size_t head_dim) : head_dim_(head_dim) {
    detail::require(head_dim > 0, Errc::shape_mismatch, "f16: head_dim must be positive");
  }
  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t tokens_per_tile() const noexcept { return 1; }
  std::size_t bytes_per_tile() const noexcept { return 2 * head_dim_; }
  void encode_tile(const float* x, std::byte* out) const {
    if (detail::require_finite(x, head_dim_, name) > 65504.0f)
      detail::fail(Errc::out_of_range, "f16: value above 65504 overflows fp16");
    for (std::size_t i = 0; i < head_dim_; ++i) bits::store_u16(out + 2 * i, float_to_half_bits(x[i]));
  }
  void decode_tile(const std::byte* in, float* y) const {
    for (std::size_t i = 0; i < head_dim_; ++i) y[i] = half_bits_to_float(bits::load_u16(in + 2 * i));
  }
  void prepare_query(const float* q, float* q_work) const { std::copy_n(q, head_dim_, q_work); }
  void scores(const float* q_work, const std::byte* tile, float* out) const {
    float s = 0.0f;
    for (std::size_t i = 0; i < head_dim_; ++i) s += q_work[i] * half_bits_to_float(bits::load_u16(tile + 2 * i));
    out[0] = s;
  }
  void accumulate(float* acc, const float* w, const std::byte* tile) const {
    for (std::size_t i = 0; i < head_dim_; ++i) acc[i] += w[0] * half_bits_to_float(bits::load_u16(tile + 2 * i));
  }
  void finish_output(const float* acc, float* out) const { std::copy_n(acc, head_dim_, out); }

 private:
  std::size_t head_dim_;
};

static_assert(Codec<ExactF32> && Codec<ExactF16>);

}  // namespace kvq
