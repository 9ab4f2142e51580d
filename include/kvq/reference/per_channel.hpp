// Scalar reference of the per-channel K tile formats pc4 / pc3 / pc2.
//
// Keys have channels with large, persistent offsets and outlier magnitudes
// (KIVI, KVQuant); a per-token block shares one scale between a quiet channel
// and an outlier one and loses the quiet one. These formats instead scale each
// channel on its own, over a tile of G consecutive tokens. This file is the
// oracle for the SIMD kernels and the text to read when porting them; the byte
// layout is specified in docs/FORMATS.md ("Per-channel K").
//
// A tile holds G tokens x D channels (D = head_dim), input token-major
// x[t * D + c]. For channel c with tile minimum lo_c and maximum hi_c:
//
//   offset  m_c = Md * v_c + Mmin      v_c in 0..255, Md, Mmin fp16 per tile
//   scale   s_c = Sd * u_c + Smin      u_c in 0..255, Sd, Smin fp16 per tile
//   value   x[t][c] = s_c * k[t][c] + m_c,   k in 0..2^bits - 1
//
// The per-channel scales and offsets are themselves quantized to 8 bits
// ("double quantization", as QLoRA does for its block scales), which is what
// makes the metadata cost 16/G bits per value instead of 32/G or 64/G.
//
// Why the metadata is rounded in a fixed direction: the codes are chosen
// against the *dequantized* m_c and s_c (what decode will use). m_c is rounded
// down (m_c <= lo_c) and s_c up (m_c + (2^bits-1) s_c >= hi_c), so every value
// of the channel lies inside the decoded grid and is reproduced within half a
// step of the decoded scale, s_c / 2, up to float rounding. Nearest rounding of
// the metadata would leave values outside the grid, clamped with larger error.
//
// Why dequantizing the metadata is exact: Md * v and Sd * u multiply an fp16
// (11 significant bits) by an 8-bit integer, exact in float, so a fused
// multiply-add and a separate multiply and add give the same m_c and s_c: a
// GPU or SIMD port reproduces the scales of this code bit for bit.
//
// Attention on a tile, without decoding it. For a query q,
//
//   q . x[t] = sum_c q_c (s_c k[t][c] + m_c) = sum_c q'_c k[t][c] + b,
//   q'_c = q_c s_c,   b = sum_c q_c m_c
//
// so per tile the scale is folded into the query once (D multiplies) and the
// offsets into one constant b; every token then costs D multiply-adds on small
// integer codes. Codes are stored channel-major (all G codes of channel 0,
// then channel 1, ...) so a kernel broadcasts q'_c and adds q'_c * k[.][c] into
// G per-token accumulators: vertical SIMD, no horizontal reduction per token.
// The weighted sum is acc_c += s_c sum_t w_t k[t][c] + m_c sum_t w_t.
//
// Streaming: a tile can only be encoded when its G tokens are known. Until
// then the newest tokens live at full precision in a staging tile owned by
// the cache; the staging tile is part of the cache's recent full-precision
// window, so a window of N >= G tokens contains it, and with N < G the window
// is effectively G (tokens leave the staging tile only a whole tile at once).
// Encoding a full tile is deterministic: same floats, same bytes.
//
// Re-encoding a decoded tile is not byte-identical in general: a channel whose
// rounded-up scale leaves its top code unused gets a tighter grid the second
// time (values move by at most half the new step). Tiles already on the grid
// (codes spanning 0..2^bits-1 per channel, metadata codes spanning 0..255) are
// fixed points. Directed rounding, i.e. the error bound, is worth that.
#pragma once

#include <kvq/core/bits.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/half.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq::reference {

// Tile geometry of the per-channel formats. G must be a multiple of 32 (so
// every channel's code run is whole bytes for 2/3/4 bits and splits evenly
// into the strided planes below) and D a multiple of 8.
inline constexpr std::size_t kPerChannelMinTokens = 32;
inline constexpr std::size_t kPerChannelMaxTokens = 1024;

inline constexpr bool per_channel_supports(std::size_t head_dim, std::size_t tile_tokens) noexcept {
  return head_dim > 0 && head_dim % 8 == 0 && head_dim <= 65536 && tile_tokens >= kPerChannelMinTokens &&
         tile_tokens <= kPerChannelMaxTokens && tile_tokens % 32 == 0;
}

// Bytes of one channel's run of G codes.
template <unsigned Bits>
constexpr std::size_t per_channel_run_bytes(std::size_t tile_tokens) noexcept {
  return tile_tokens * Bits / 8;
}

// Tile layout: [D code runs][u: D bytes][v: D bytes][Sd][Smin][Md][Mmin] (fp16 each).
template <unsigned Bits>
constexpr std::size_t per_channel_tile_bytes(std::size_t head_dim, std::size_t tile_tokens) noexcept {
  return head_dim * per_channel_run_bytes<Bits>(tile_tokens) + 2 * head_dim + 8;
}

namespace detail {

// fp16 rounding toward -inf / +inf: the nearest fp16 on the required side.
// Returns the fp16 bits; the caller checks for overflow to Inf.
inline std::uint16_t half_bits_down(float x) noexcept {
  std::uint16_t h = float_to_half_bits(x);
  if (half_bits_to_float(h) > x) {
    if (h == 0x0000u) h = 0x8001u;           // +0 -> smallest negative subnormal
    else if (h & 0x8000u) ++h;               // negative: larger magnitude
    else --h;                                // positive: smaller magnitude
  }
  return h == 0x8000u ? std::uint16_t{0} : h;  // store -0 as +0
}
inline std::uint16_t half_bits_up(float x) noexcept {
  std::uint16_t h = float_to_half_bits(x);
  if (half_bits_to_float(h) < x) {
    if (h == 0x8000u || h == 0x0000u) h = 0x0001u;
    else if (h & 0x8000u) --h;
    else ++h;
  }
  return h == 0x8000u ? std::uint16_t{0} : h;
}
inline bool half_bits_finite(std::uint16_t h) noexcept { return (h & 0x7C00u) != 0x7C00u; }

// Quantizes `need` (n values) to 8-bit codes on the grid g(a) = d * a + base
// with d, base fp16, rounding each value toward `up` (true: g >= need, false:
// g <= need) as evaluated in float, exactly as the decoder evaluates it.
// Returns false if d or base overflow fp16.
inline bool quantize_metadata(const float* need, std::size_t n, bool up, std::uint16_t& d_bits,
                              std::uint16_t& base_bits, std::uint8_t* codes) {
  float lo = need[0], hi = need[0];
  for (std::size_t i = 1; i < n; ++i) {
    lo = std::min(lo, need[i]);
    hi = std::max(hi, need[i]);
  }
  // Rounding up, the grid starts below every value and its step is rounded
  // up so code 255 reaches the largest; rounding down, it starts at or below
  // the smallest value and codes are floored.
  base_bits = half_bits_down(lo);
  if (!half_bits_finite(base_bits)) return false;
  const float base = half_bits_to_float(base_bits);
  d_bits = half_bits_up((hi - base) / 255.0f);
  for (;;) {
    if (!half_bits_finite(d_bits)) return false;
    const float d = half_bits_to_float(d_bits);
    if (!up || d * 255.0f + base >= hi) break;
    ++d_bits;  // float rounding of the division left the top short: next fp16 up
  }
  const float d = half_bits_to_float(d_bits);
  for (std::size_t i = 0; i < n; ++i) {
    int a = 0;
    if (d > 0.0f) {
      const float r = (need[i] - base) / d;
      a = static_cast<int>(std::clamp(up ? std::ceil(r) : std::floor(r), 0.0f, 255.0f));
      // Settle the boundary in the decoder's own arithmetic.
      if (up) {
        while (a > 0 && d * static_cast<float>(a - 1) + base >= need[i]) --a;
        while (a < 255 && d * static_cast<float>(a) + base < need[i]) ++a;
      } else {
        while (a > 0 && d * static_cast<float>(a) + base > need[i]) --a;
        while (a < 255 && d * static_cast<float>(a + 1) + base <= need[i]) ++a;
      }
    }
    codes[i] = static_cast<std::uint8_t>(a);
  }
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Code runs. Channel c's run starts at byte c * run_bytes. Within a run, with
// G tokens (the strides keep every lane group in token order after shifts):
//   4 bits: byte j (0 <= j < G/2) = k[j] | k[j + G/2] << 4
//   2 bits: byte j (0 <= j < G/4) = k[j] | k[j+G/4] << 2 | k[j+G/2] << 4 | k[j+3G/4] << 6
//   3 bits: the low 2 bits of every code as the 2-bit run (G/4 bytes), then
//           G/8 bytes whose bit t (little-endian bit order) is bit 2 of k[t].

template <unsigned Bits>
void pack_run(const std::uint8_t* k, std::size_t g, std::byte* run) {
  static_assert(Bits == 2 || Bits == 3 || Bits == 4);
  if constexpr (Bits == 4) {
    for (std::size_t j = 0; j < g / 2; ++j) run[j] = static_cast<std::byte>(k[j] | (k[j + g / 2] << 4));
  } else {
    const std::size_t q = g / 4;
    for (std::size_t j = 0; j < q; ++j)
      run[j] = static_cast<std::byte>((k[j] & 3) | ((k[j + q] & 3) << 2) | ((k[j + 2 * q] & 3) << 4) |
                                      ((k[j + 3 * q] & 3) << 6));
    if constexpr (Bits == 3) {
      for (std::size_t j = 0; j < g / 8; ++j) {
        unsigned b = 0;
        for (unsigned i = 0; i < 8; ++i) b |= static_cast<unsigned>(k[8 * j + i] >> 2) << i;
        run[q + j] = static_cast<std::byte>(b);
      }
    }
  }
}

template <unsigned Bits>
void unpack_run(const std::byte* run, std::size_t g, std::uint8_t* k) {
  static_assert(Bits == 2 || Bits == 3 || Bits == 4);
  if constexpr (Bits == 4) {
    for (std::size_t j = 0; j < g / 2; ++j) {
      const unsigned b = bits::byte_at(run, j);
      k[j] = static_cast<std::uint8_t>(b & 0xF);
      k[j + g / 2] = static_cast<std::uint8_t>(b >> 4);
    }
  } else {
    const std::size_t q = g / 4;
    for (std::size_t t = 0; t < g; ++t) {
      unsigned c = (bits::byte_at(run, t % q) >> (2 * (t / q))) & 3u;
      if constexpr (Bits == 3) c |= ((bits::byte_at(run, q + t / 8) >> (t % 8)) & 1u) << 2;
      k[t] = static_cast<std::uint8_t>(c);
    }
  }
}

// ---------------------------------------------------------------------------
// Decoded metadata of a tile: per-channel scale s[c] and offset m[c].
struct PerChannelMeta {
  std::vector<float> scale, offset;
};

template <unsigned Bits>
PerChannelMeta read_meta(const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens) {
  const std::byte* u = tile + head_dim * per_channel_run_bytes<Bits>(tile_tokens);
  const std::byte* v = u + head_dim;
  const std::byte* h = v + head_dim;
  const float sd = half_bits_to_float(bits::load_u16(h)), smin = half_bits_to_float(bits::load_u16(h + 2));
  const float md = half_bits_to_float(bits::load_u16(h + 4)), mmin = half_bits_to_float(bits::load_u16(h + 6));
  PerChannelMeta meta{std::vector<float>(head_dim), std::vector<float>(head_dim)};
  for (std::size_t c = 0; c < head_dim; ++c) {
    meta.scale[c] = sd * static_cast<float>(bits::byte_at(u, c)) + smin;
    meta.offset[c] = md * static_cast<float>(bits::byte_at(v, c)) + mmin;
  }
  return meta;
}

// Encodes one tile of tile_tokens x head_dim floats (token-major). Input must be
// finite (checked by the caller); returns false, writing nothing, if the tile's
// metadata would overflow fp16 (a channel minimum below -65504, or a range so
// large that its step exceeds fp16).
template <unsigned Bits>
bool try_encode_tile(const float* x, std::size_t head_dim, std::size_t tile_tokens, std::byte* out) {
  constexpr int nmax = (1 << Bits) - 1;
  const std::size_t D = head_dim, G = tile_tokens;
  std::vector<float> lo(D), hi(D), need(D);
  for (std::size_t c = 0; c < D; ++c) lo[c] = hi[c] = x[c];
  for (std::size_t t = 1; t < G; ++t)
    for (std::size_t c = 0; c < D; ++c) {
      lo[c] = std::min(lo[c], x[t * D + c]);
      hi[c] = std::max(hi[c], x[t * D + c]);
    }

  // 1. Offsets, rounded down so every channel minimum is at or above its m_c.
  std::vector<std::uint8_t> u(D), v(D);
  std::uint16_t md_bits, mmin_bits, sd_bits, smin_bits;
  if (!detail::quantize_metadata(lo.data(), D, false, md_bits, mmin_bits, v.data())) return false;
  const float md = half_bits_to_float(md_bits), mmin = half_bits_to_float(mmin_bits);
  std::vector<float> m(D), s(D);
  for (std::size_t c = 0; c < D; ++c) m[c] = md * static_cast<float>(v[c]) + mmin;

  // 2. Scales: the step that reaches the channel maximum from the *decoded*
  //    offset, rounded up.
  for (std::size_t c = 0; c < D; ++c) need[c] = (hi[c] - m[c]) / static_cast<float>(nmax);
  if (!detail::quantize_metadata(need.data(), D, true, sd_bits, smin_bits, u.data())) return false;
  const float sd = half_bits_to_float(sd_bits), smin = half_bits_to_float(smin_bits);
  for (std::size_t c = 0; c < D; ++c) s[c] = sd * static_cast<float>(u[c]) + smin;

  // 3. Codes against the decoded offset and scale, rounded half up.
  const std::size_t run = per_channel_run_bytes<Bits>(G);
  std::vector<std::uint8_t> k(G);
  for (std::size_t c = 0; c < D; ++c) {
    for (std::size_t t = 0; t < G; ++t) {
      int code = 0;
      if (s[c] > 0.0f) code = static_cast<int>(std::clamp(std::floor((x[t * D + c] - m[c]) / s[c] + 0.5f), 0.0f, float(nmax)));
      k[t] = static_cast<std::uint8_t>(code);
    }
    pack_run<Bits>(k.data(), G, out + c * run);
  }
  std::byte* meta = out + D * run;
  for (std::size_t c = 0; c < D; ++c) {
    meta[c] = static_cast<std::byte>(u[c]);
    meta[D + c] = static_cast<std::byte>(v[c]);
  }
  bits::store_u16(meta + 2 * D, sd_bits);
  bits::store_u16(meta + 2 * D + 2, smin_bits);
  bits::store_u16(meta + 2 * D + 4, md_bits);
  bits::store_u16(meta + 2 * D + 6, mmin_bits);
  return true;
}

// y[t * D + c] = s_c * k[t][c] + m_c
template <unsigned Bits>
void decode_tile(const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens, float* y) {
  const PerChannelMeta meta = read_meta<Bits>(tile, head_dim, tile_tokens);
  const std::size_t run = per_channel_run_bytes<Bits>(tile_tokens);
  std::vector<std::uint8_t> k(tile_tokens);
  for (std::size_t c = 0; c < head_dim; ++c) {
    unpack_run<Bits>(tile + c * run, tile_tokens, k.data());
    for (std::size_t t = 0; t < tile_tokens; ++t)
      y[t * head_dim + c] = meta.scale[c] * static_cast<float>(k[t]) + meta.offset[c];
  }
}

// The query folded with a tile's metadata: qs[c] = q_c s_c; returns the
// offsets' constant b = sum_c q_c m_c (f32, in channel order).
template <unsigned Bits>
float fold_query(const float* q, const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens, float* qs) {
  const PerChannelMeta meta = read_meta<Bits>(tile, head_dim, tile_tokens);
  float bias = 0.0f;
  for (std::size_t c = 0; c < head_dim; ++c) {
    qs[c] = q[c] * meta.scale[c];
    bias += q[c] * meta.offset[c];
  }
  return bias;
}

// out[t] = q . decode(tile)[t] for all G tokens: the scale folded into the
// query once per tile (q'_c = q_c s_c) and the offsets into one constant.
template <unsigned Bits>
void scores(const float* q, const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens, float* out) {
  std::vector<float> qs(head_dim);
  const float bias = fold_query<Bits>(q, tile, head_dim, tile_tokens, qs.data());
  const std::size_t run = per_channel_run_bytes<Bits>(tile_tokens);
  std::vector<std::uint8_t> k(tile_tokens);
  std::fill(out, out + tile_tokens, bias);
  for (std::size_t c = 0; c < head_dim; ++c) {  // channel-major: G accumulators
    unpack_run<Bits>(tile + c * run, tile_tokens, k.data());
    for (std::size_t t = 0; t < tile_tokens; ++t) out[t] += qs[c] * static_cast<float>(k[t]);
  }
}

// acc[c] += sum_t w[t] * decode(tile)[t][c]
template <unsigned Bits>
void accumulate(float* acc, const float* w, const std::byte* tile, std::size_t head_dim, std::size_t tile_tokens) {
  const PerChannelMeta meta = read_meta<Bits>(tile, head_dim, tile_tokens);
  float wsum = 0.0f;
  for (std::size_t t = 0; t < tile_tokens; ++t) wsum += w[t];
  const std::size_t run = per_channel_run_bytes<Bits>(tile_tokens);
  std::vector<std::uint8_t> k(tile_tokens);
  for (std::size_t c = 0; c < head_dim; ++c) {
    unpack_run<Bits>(tile + c * run, tile_tokens, k.data());
    float wk = 0.0f;
    for (std::size_t t = 0; t < tile_tokens; ++t) wk += w[t] * static_cast<float>(k[t]);
    acc[c] += meta.scale[c] * wk + meta.offset[c] * wsum;
  }
}

}  // namespace kvq::reference
