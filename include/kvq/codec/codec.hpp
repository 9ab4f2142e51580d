// The Codec concept: what every K/V compression format provides.
//
// A codec object is built for one head_dim (and whatever else its format needs:
// a rotation seed, a tile length) and is then immutable, so one object can be
// shared by every layer and thread using that format. It turns a *tile* of
// `tokens_per_tile()` consecutive tokens x `head_dim()` floats into exactly
// `bytes_per_tile()` bytes. Row codecs (uniform, turbo) have tokens_per_tile 1;
// tile codecs (per-channel K) encode G tokens at once because a channel's
// scale is computed across tokens.
//
// Attention never decodes a cache. It runs in the codec's *working space*:
//   q' = prepare_query(q)                 once per query head and pass
//   s[t] = scores(q', tile)[t]            = q . decode(tile)[t]
//   a   += accumulate(w[t], tile)         a = sum_t w[t] * decode(tile)[t] in working space
//   out = finish_output(a)                once per head, back to model space
// For plain formats the working space is the model space and the two
// transforms copy; rotated formats (turbo) rotate q once and un-rotate the
// accumulated output once, which is what makes reading them cheap.
//
// Contract of encode_tile: input must be finite, else Errc::non_finite is
// reported before anything is written; values whose scales overflow a format's
// metadata are refused with Errc::out_of_range. decode_tile/scores/accumulate
// accept any bytes without undefined behaviour (a hostile tile may decode to
// NaN/Inf, never crash).
#pragma once

#include <kvq/core/error.hpp>

#include <cmath>
#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>

namespace kvq {

template <class C>
concept Codec = requires(const C& c, const float* in, float* out, std::byte* bytes,
                         const std::byte* cbytes) {
  { C::name } -> std::convertible_to<std::string_view>;
  { c.head_dim() } -> std::same_as<std::size_t>;
  { c.tokens_per_tile() } -> std::same_as<std::size_t>;
  { c.bytes_per_tile() } -> std::same_as<std::size_t>;
  { c.encode_tile(in, bytes) } -> std::same_as<void>;
  { c.decode_tile(cbytes, out) } -> std::same_as<void>;
  { c.prepare_query(in, out) } -> std::same_as<void>;
  { c.scores(in, cbytes, out) } -> std::same_as<void>;
  { c.accumulate(out, in, cbytes) } -> std::same_as<void>;
  { c.finish_output(in, out) } -> std::same_as<void>;
};

// Storage cost including all metadata.
template <Codec C>
double bits_per_value(const C& c) {
  return 8.0 * static_cast<double>(c.bytes_per_tile()) /
         static_cast<double>(c.tokens_per_tile() * c.head_dim());
}

namespace detail {
// Shared input check of every encoder, reported before a byte is written.
// Returns max |x| for the caller's range checks.
inline float require_finite(const float* x, std::size_t n, std::string_view codec) {
  float amax = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      fail(Errc::non_finite, std::string(codec) + ": cannot encode non-finite value at index " +
                                 std::to_string(i));
    amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;
  }
  return amax;
}
}  // namespace detail

}  // namespace kvq
