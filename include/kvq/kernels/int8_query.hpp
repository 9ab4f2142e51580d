// Queries quantized to int8 per block of 32 values, laid out for the int8
// score kernels (kernels::quantize_queries fills it, kernels::scores reads
// it). The quantization rule and the accuracy contract of the scores are in
// kvq/reference/int8_query.hpp.
//
// Per query, the blocks are padded to an even count (the widest target reads
// two blocks per vector; a padding block is all zeros) and stored as five
// sections of 32 bytes per block, each contiguous over the blocks so a
// kernel loads one or two blocks of a section at once:
//   codes    int8[32]    c_j
//   bias128  int32[8]    -128 * (sum of codes 4i..4i+3) for lane i (q8_0 on VNNI)
//   bias8    int32[8]    -8 * (the same)                          (q4_0's offset)
//   step     float[8]    d in every lane
//   sum      float[8]    sum_j q_j in lane 0, zeros
// That is 160 bytes per block (five times the codes): the biases and the
// lane-spread step and sum are loads the kernels would otherwise compute per
// key row.
#pragma once

#include <cstddef>
#include <vector>

namespace kvq::kernels {

class Int8Queries {
 public:
  static constexpr std::size_t kBlockValues = 32;
  static constexpr std::size_t kSectionBytes = 32;  // per block and section
  static constexpr std::size_t kSections = 5;

  // Shapes the storage for n_q queries of head_dim values (grows, never
  // shrinks, so a reused object stops allocating).
  void reshape(std::size_t n_q, std::size_t head_dim) {
    n_q_ = n_q;
    head_dim_ = head_dim;
    const std::size_t need = n_q * stride();
    if (bytes_.size() < need) bytes_.resize(need);
  }

  std::size_t n_q() const noexcept { return n_q_; }
  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t n_blocks() const noexcept { return head_dim_ / kBlockValues; }
  std::size_t padded_blocks() const noexcept { return (n_blocks() + 1) / 2 * 2; }
  std::size_t stride() const noexcept { return padded_blocks() * kSections * kSectionBytes; }  // bytes per query
  const std::byte* data() const noexcept { return bytes_.data(); }
  std::byte* data() noexcept { return bytes_.data(); }

 private:
  std::size_t n_q_ = 0, head_dim_ = 0;
  std::vector<std::byte> bytes_;
};

}  // namespace kvq::kernels
