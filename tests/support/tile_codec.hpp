// A small per-channel tile codec for tests: G tokens per tile, per channel an
// fp32 minimum and step over the tile, 8-bit codes. Not a shipped format; it
// exercises the cache's tile handling (staging in the window, lcm demotion
// units, straddling truncation) and the typed cache's unregistered codecs.
#pragma once

#include <kvq/codec/codec.hpp>
#include <kvq/core/bits.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace kvq::test {

template <std::size_t G>
class ChannelTile {
 public:
  static constexpr std::string_view name = G == 4 ? "test_ch4" : G == 8 ? "test_ch8" : "test_chG";
  explicit ChannelTile(std::size_t head_dim) : d_(head_dim) {}
  std::size_t head_dim() const noexcept { return d_; }
  std::size_t tokens_per_tile() const noexcept { return G; }
  std::size_t bytes_per_tile() const noexcept { return d_ * 8 + G * d_; }
  void encode_tile(const float* x, std::byte* out) const {
    detail::require_finite(x, G * d_, name);
    for (std::size_t c = 0; c < d_; ++c) {
      float lo = x[c], hi = x[c];
      for (std::size_t t = 1; t < G; ++t) lo = std::min(lo, x[t * d_ + c]), hi = std::max(hi, x[t * d_ + c]);
      const float step = (hi - lo) / 255.0f;
      bits::store_f32(out + 8 * c, lo);
      bits::store_f32(out + 8 * c + 4, step);
      for (std::size_t t = 0; t < G; ++t) {
        const float code = step > 0 ? std::round((x[t * d_ + c] - lo) / step) : 0.0f;
        out[8 * d_ + t * d_ + c] = static_cast<std::byte>(static_cast<std::uint8_t>(std::clamp(code, 0.0f, 255.0f)));
      }
    }
  }
  void decode_tile(const std::byte* in, float* y) const {
    for (std::size_t t = 0; t < G; ++t)
      for (std::size_t c = 0; c < d_; ++c)
        y[t * d_ + c] = bits::load_f32(in + 8 * c) +
                        bits::load_f32(in + 8 * c + 4) * static_cast<float>(bits::byte_at(in, 8 * d_ + t * d_ + c));
  }
  void prepare_query(const float* q, float* w) const { std::copy_n(q, d_, w); }
  void scores(const float* q, const std::byte* tile, float* out) const {
    std::vector<float> y(G * d_);
    decode_tile(tile, y.data());
    for (std::size_t t = 0; t < G; ++t) {
      float s = 0;
      for (std::size_t c = 0; c < d_; ++c) s += q[c] * y[t * d_ + c];
      out[t] = s;
    }
  }
  void accumulate(float* acc, const float* w, const std::byte* tile) const {
    std::vector<float> y(G * d_);
    decode_tile(tile, y.data());
    for (std::size_t t = 0; t < G; ++t)
      for (std::size_t c = 0; c < d_; ++c) acc[c] += w[t] * y[t * d_ + c];
  }
  void finish_output(const float* acc, float* out) const { std::copy_n(acc, d_, out); }

 private:
  std::size_t d_;
};

static_assert(Codec<ChannelTile<4>>);

}  // namespace kvq::test
