// Uniform block codecs: ggml's q8_0 / q4_0 / q4_1 and kvq's q3_1 / q2_1.
//
// Row codecs (one token per tile) built on the block formats of
// reference/uniform.hpp. head_dim must be a multiple of 32. The working space
// is the model space, so prepare_query and finish_output copy.
#pragma once

#include <kvq/codec/codec.hpp>
#include <kvq/reference/uniform.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace kvq {

template <class Block>
class Uniform {
 public:
  static constexpr std::string_view name = Block::name;
  using block_type = Block;

  explicit Uniform(std::size_t head_dim) : head_dim_(head_dim) {
    detail::require(supports(head_dim), Errc::shape_mismatch,
                    std::string(name) + ": head_dim " + std::to_string(head_dim) +
                        " is not a positive multiple of 32");
  }
  static constexpr bool supports(std::size_t head_dim) noexcept {
    return head_dim > 0 && head_dim % reference::kBlockValues == 0;
  }

  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t tokens_per_tile() const noexcept { return 1; }
  std::size_t bytes_per_tile() const noexcept { return head_dim_ / reference::kBlockValues * Block::bytes; }

  void encode_tile(const float* x, std::byte* out) const {
    // Below fp16's largest finite value no block's scale or minimum can
    // overflow; above it, each block is trial-encoded first so a refusal comes
    // before any output byte is written.
    if (detail::require_finite(x, head_dim_, name) > 65504.0f) {
      std::byte scratch[Block::bytes];
      for (std::size_t b = 0; b < head_dim_ / reference::kBlockValues; ++b)
        Block::encode(x + b * reference::kBlockValues, scratch);
    }
    reference::encode_row<Block>(x, head_dim_, out);
  }
  void decode_tile(const std::byte* in, float* y) const { reference::decode_row<Block>(in, head_dim_, y); }

  void prepare_query(const float* q, float* q_work) const { std::copy_n(q, head_dim_, q_work); }
  void scores(const float* q_work, const std::byte* tile, float* out) const {
    out[0] = reference::dot_row<Block>(q_work, tile, head_dim_);
  }
  void accumulate(float* acc, const float* weights, const std::byte* tile) const {
    reference::accumulate_row<Block>(acc, weights[0], tile, head_dim_);
  }
  void finish_output(const float* acc, float* out) const { std::copy_n(acc, head_dim_, out); }

 private:
  std::size_t head_dim_;
};

using Q8_0 = Uniform<reference::Q8_0Block>;
using Q4_0 = Uniform<reference::Q4_0Block>;
using Q4_1 = Uniform<reference::Q4_1Block>;
using Q3_1 = Uniform<reference::Q3_1Block>;
using Q2_1 = Uniform<reference::Q2_1Block>;

static_assert(Codec<Q8_0> && Codec<Q4_0> && Codec<Q4_1> && Codec<Q3_1> && Codec<Q2_1>);

}  // namespace kvq
