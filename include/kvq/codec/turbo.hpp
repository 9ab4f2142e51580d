// Turbo codecs: random rotation + Lloyd-Max scalar codebook (turbo2/3/4).
//
// TurboQuant's MSE quantizer (Zandieh et al. 2025) without its QJL residual
// bit: after a seeded random rotation every coordinate of a normalized vector
// follows one known distribution (sqrt(d) times a coordinate of a random unit
// vector), so one b-bit Lloyd-Max codebook for that distribution serves every
// coordinate of every vector, with no per-block scales. A row stores one fp16
// scale plus b bits per coordinate: b + 16/head_dim bits/value (turbo4 at
// head_dim 128: 66 bytes, 4.125 bits/value). The format is specified in
// reference/turbo.hpp and docs/FORMATS.md; the measurements behind its
// choices (norm-corrected scale, no QJL bit) are in docs/QUALITY.md.
//
// Working space = rotated space. prepare_query rotates q once (q' = R q);
// scores is alpha * sum_i q'_i L[idx_i], read straight from the indices with no
// inverse rotation; accumulate sums w * alpha * L[idx] in rotated space; and
// finish_output applies R^-1 once per head. R is orthonormal, so this equals
// q . decode(tile) and sum_t w_t decode(tile_t) up to float rounding.
//
// head_dim must be a multiple of 16 (the index groups) in 16..1024. Power-of-two
// dims use the randomized Hadamard rotation (O(d log d)); others (80, 96, 112)
// a dense Haar-random orthogonal matrix (O(d^2), paid only in prepare_query,
// finish_output and encode). Codebooks come from the shipped tables
// (lloyd_max_tables.hpp) or, for other dims, from the solver at construction.
// (dim, seed) determine the rotation, so both must match to read a cache:
// every codec built with the default seed reads every other one's rows.
#pragma once

#include <kvq/codec/codec.hpp>
#include <kvq/codec/lloyd_max.hpp>
#include <kvq/codec/lloyd_max_tables.hpp>
#include <kvq/core/scratch.hpp>
#include <kvq/reference/int8_query.hpp>
#include <kvq/reference/turbo.hpp>
#include <kvq/rotation/rotation.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace kvq {

namespace detail {
template <unsigned Bits>
inline constexpr std::string_view turbo_name = "";
template <>
inline constexpr std::string_view turbo_name<1> = "turbo1";
template <>
inline constexpr std::string_view turbo_name<2> = "turbo2";
template <>
inline constexpr std::string_view turbo_name<3> = "turbo3";
template <>
inline constexpr std::string_view turbo_name<4> = "turbo4";
}  // namespace detail

template <unsigned Bits>
class Turbo {
  static_assert(Bits >= 1 && Bits <= 4, "turbo codecs have 1..4 bits per coordinate");

 public:
  static constexpr std::string_view name = detail::turbo_name<Bits>;
  static constexpr unsigned bits = Bits;
  // The rotation seed every kvq turbo codec uses unless told otherwise
  // ("kvq" in ASCII). One fixed seed is what lets any reader decode a cache.
  static constexpr std::uint64_t kDefaultSeed = 0x6B7671;
  static constexpr std::size_t kMinHeadDim = reference::kTurboGroup;
  // Non-power-of-two dims use a dense d x d rotation (d^2 doubles while it is
  // built): a bound keeps a hostile head_dim from allocating gigabytes. Real
  // models use 64..256.
  static constexpr std::size_t kMaxHeadDim = 1024;

  explicit Turbo(std::size_t head_dim, std::uint64_t seed = kDefaultSeed)
      : head_dim_(check_dim(head_dim)), seed_(seed), rotation_(head_dim, seed) {
    constexpr std::size_t n = std::size_t{1} << Bits;
    if (const float* table = lloyd_max_levels(static_cast<int>(Bits), head_dim)) {
      levels_.assign(table, table + n);
    } else {
      const Codebook cb = lloyd_max_sphere(static_cast<int>(Bits), head_dim);
      for (double l : cb.levels) levels_.push_back(static_cast<float>(l));
    }
    for (std::size_t k = 0; k + 1 < n; ++k) thresholds_.push_back(0.5f * (levels_[k] + levels_[k + 1]));
    int8_levels_ = reference::int8_codebook(levels_.data(), n);
  }

  static constexpr bool supports(std::size_t head_dim) noexcept {
    return head_dim >= kMinHeadDim && head_dim <= kMaxHeadDim && head_dim % reference::kTurboGroup == 0;
  }

  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t tokens_per_tile() const noexcept { return 1; }
  std::size_t bytes_per_tile() const noexcept { return reference::turbo_row_bytes(Bits, head_dim_); }
  std::uint64_t seed() const noexcept { return seed_; }
  const Rotation& rotation() const noexcept { return rotation_; }
  // 2^Bits codebook levels (unit-variance coordinate), ascending.
  const std::vector<float>& levels() const noexcept { return levels_; }
  // The 2^Bits - 1 decision boundaries (midpoints of adjacent levels).
  const std::vector<float>& thresholds() const noexcept { return thresholds_; }
  // The levels rounded to int8 for int8-query scores (reference/int8_query.hpp).
  const reference::Int8Codebook& int8_codebook() const noexcept { return int8_levels_; }

  void encode_tile(const float* x, std::byte* out) const {
    detail::require_finite(x, head_dim_, name);
    double n2 = 0.0;
    for (std::size_t i = 0; i < head_dim_; ++i) n2 += static_cast<double>(x[i]) * x[i];
    const double norm = std::sqrt(n2);
    // alpha = |x| / |L[idx]| >= |x| / (sqrt(d) max|L|), and max|L| < 3: beyond
    // this bound alpha certainly overflows fp16, and refusing here also keeps
    // the float rotation far from overflow.
    const double certain_overflow = 65520.0 * 3.0 * std::sqrt(static_cast<double>(head_dim_));
    if (norm > certain_overflow) overflow(norm);

    // Encode into scratch so that a refusal leaves `out` untouched.
    detail::Scratch<float, 512> y(head_dim_);
    rotation_.forward(x, y.data());
    detail::Scratch<std::byte, 512> row(bytes_per_tile());
    reference::turbo_encode_rotated<Bits>(y.data(), norm, head_dim_, levels_.data(), thresholds_.data(),
                                          row.data());
    if (!std::isfinite(half_bits_to_float(bits::load_u16(row.data())))) overflow(norm);
    std::memcpy(out, row.data(), bytes_per_tile());
  }

  void decode_tile(const std::byte* in, float* y) const {
    reference::turbo_decode_rotated<Bits>(in, head_dim_, levels_.data(), y);
    rotation_.inverse(y, y);
  }

  void prepare_query(const float* q, float* q_work) const { rotation_.forward(q, q_work); }
  void scores(const float* q_work, const std::byte* tile, float* out) const {
    out[0] = reference::turbo_dot_rotated<Bits>(q_work, tile, head_dim_, levels_.data());
  }
  void accumulate(float* acc, const float* weights, const std::byte* tile) const {
    reference::turbo_accumulate_rotated<Bits>(acc, weights[0], tile, head_dim_, levels_.data());
  }
  void finish_output(const float* acc, float* out) const { rotation_.inverse(acc, out); }

 private:
  static std::size_t check_dim(std::size_t head_dim) {
    detail::require(supports(head_dim), Errc::shape_mismatch,
                    std::string(name) + ": head_dim " + std::to_string(head_dim) +
                        " is not a multiple of 16 in 16..1024");
    return head_dim;
  }
  [[noreturn]] void overflow(double norm) const {
    detail::fail(Errc::out_of_range, std::string(name) + ": vector norm " + std::to_string(norm) +
                                         " overflows the fp16 scale");
  }

  std::size_t head_dim_;
  std::uint64_t seed_;
  Rotation rotation_;
  std::vector<float> levels_;
  std::vector<float> thresholds_;
  reference::Int8Codebook int8_levels_;
};

using Turbo2 = Turbo<2>;
using Turbo3 = Turbo<3>;
using Turbo4 = Turbo<4>;

static_assert(Codec<Turbo2> && Codec<Turbo3> && Codec<Turbo4>);

}  // namespace kvq
