// Per-channel K tile codecs pc4 / pc3 / pc2 (KIVI/KVQuant-style key quantization
// with QLoRA-style double-quantized scale and offset vectors).
//
// A tile codec: tokens_per_tile() = G consecutive tokens of one KV head are
// encoded together, because a channel's scale and offset are statistics over
// tokens. G is a run-time constructor value (a multiple of 32 in 32..1024;
// 128 by default); head_dim must be a positive multiple of 8. The format and
// the algebra (scale folded into the query once per tile, offsets into one
// per-tile constant) are in reference/per_channel.hpp and docs/FORMATS.md.
//
// Streaming: tokens arrive one at a time, but only a full tile can be encoded.
// The cache keeps the newest, not yet full tile at full precision (a staging
// tile it owns) and encodes it when the G-th token arrives. The staging tile is
// part of the recent full-precision window: a window of N >= G tokens holds it,
// a smaller window is in effect rounded up to the staging tile.
//
// Working space is model space: prepare_query and finish_output copy.
#pragma once

#include <kvq/codec/codec.hpp>
#include <kvq/reference/per_channel.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace kvq {

template <unsigned Bits>
class PerChannel {
  static_assert(Bits == 2 || Bits == 3 || Bits == 4, "per-channel codes are 2, 3 or 4 bits");

 public:
  static constexpr std::string_view name = Bits == 4 ? "pc4" : Bits == 3 ? "pc3" : "pc2";
  static constexpr unsigned bits = Bits;
  static constexpr std::size_t default_tile_tokens = 128;

  explicit PerChannel(std::size_t head_dim, std::size_t tile_tokens = default_tile_tokens)
      : head_dim_(head_dim), tile_tokens_(tile_tokens) {
    detail::require(head_dim > 0 && head_dim % 8 == 0 && head_dim <= 65536, Errc::shape_mismatch,
                    std::string(name) + ": head_dim " + std::to_string(head_dim) +
                        " is not a positive multiple of 8 (at most 65536)");
    detail::require(reference::per_channel_supports(head_dim, tile_tokens), Errc::invalid_argument,
                    std::string(name) + ": tile_tokens " + std::to_string(tile_tokens) +
                        " is not a multiple of 32 in 32..1024");
  }
  static constexpr bool supports(std::size_t head_dim, std::size_t tile_tokens = default_tile_tokens) noexcept {
    return reference::per_channel_supports(head_dim, tile_tokens);
  }

  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t tokens_per_tile() const noexcept { return tile_tokens_; }
  std::size_t bytes_per_tile() const noexcept {
    return reference::per_channel_tile_bytes<Bits>(head_dim_, tile_tokens_);
  }

  // x: tokens_per_tile() rows of head_dim() floats. Non-finite input is
  // Errc::non_finite, metadata overflowing fp16 Errc::out_of_range; in both
  // cases `out` is untouched (the reference encodes into locals first).
  void encode_tile(const float* x, std::byte* out) const {
    detail::require_finite(x, head_dim_ * tile_tokens_, name);
    if (!reference::try_encode_tile<Bits>(x, head_dim_, tile_tokens_, out))
      detail::fail(Errc::out_of_range, std::string(name) +
                                           ": a channel's offset or scale overflows fp16 "
                                           "(values beyond +-65504 or a range too wide for the tile metadata)");
  }
  void decode_tile(const std::byte* in, float* y) const {
    reference::decode_tile<Bits>(in, head_dim_, tile_tokens_, y);
  }

  void prepare_query(const float* q, float* q_work) const { std::copy_n(q, head_dim_, q_work); }
  // out[t], t < tokens_per_tile(): q . decode(tile)[t]
  void scores(const float* q_work, const std::byte* tile, float* out) const {
    reference::scores<Bits>(q_work, tile, head_dim_, tile_tokens_, out);
  }
  // acc += sum_t weights[t] * decode(tile)[t], weights has tokens_per_tile() entries
  void accumulate(float* acc, const float* weights, const std::byte* tile) const {
    reference::accumulate<Bits>(acc, weights, tile, head_dim_, tile_tokens_);
  }
  void finish_output(const float* acc, float* out) const { std::copy_n(acc, head_dim_, out); }

 private:
  std::size_t head_dim_;
  std::size_t tile_tokens_;
};

using PC4 = PerChannel<4>;
using PC3 = PerChannel<3>;
using PC2 = PerChannel<2>;

static_assert(Codec<PC4> && Codec<PC3> && Codec<PC2>);

}  // namespace kvq
