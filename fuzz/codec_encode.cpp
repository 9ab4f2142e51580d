// Fuzz target: encode_tile of arbitrary float bit patterns (NaN, Inf,
// denormals, huge values) for every codec in codec_table().
//
// Input: [codec byte][head_dim byte][float32 little-endian bits...], cycled to
// fill a tile. Oracle (docs/RELIABILITY.md, "Encode contract"):
//  - encode either returns or throws kvq::Error; any other exception or a
//    sanitizer report is a bug;
//  - a tile holding NaN/Inf is refused with Errc::non_finite; a finite tile is
//    either encoded or refused with Errc::out_of_range; a refusal writes no
//    byte of the output;
//  - a successful encode decodes to finite values within the family's
//    documented error bound (uniform: FORMATS.md "Round trip"; per-channel:
//    half the decoded channel scale), and encoding is deterministic.
#include "fuzz_support.hpp"

#include <kvq/reference/per_channel.hpp>

#include <algorithm>

namespace {
using namespace kvq::fuzz;

constexpr float kEps = 0x1.0p-23f;
// Absolute slack for float underflow: (hi - m) / nmax of a subnormal range
// can round to a zero step, leaving values below 2^-126 unrepresented.
constexpr float kTiny = 0x1.0p-126f;

// |x - x^| bound of a uniform block (docs/RELIABILITY.md): half the stored step
// (a full step for q4_0's clamped extreme), plus the fp16 rounding of the step
// (relative 2^-11, absolute 2^-25 in the subnormal range) times the largest
// code, plus that of the minimum, plus float rounding.
template <class Block>
void check_uniform(const kvq::AnyCodec& c, const float* x, const std::byte* tile, const float* y) {
  using kvq::reference::kBlockValues;
  constexpr bool q40 = Block::name == "q4_0";
  const float cmax = Block::name == "q8_0" ? 127.0f : q40 ? 8.0f : Block::name == "q4_1" ? 15.0f
                     : Block::name == "q3_1" ? 7.0f : 3.0f;
  for (std::size_t b = 0; b < c.head_dim() / kBlockValues; ++b) {
    int codes[kBlockValues];
    float d, m;
    Block::unpack(tile + b * Block::bytes, codes, d, m);
    float lo = x[b * kBlockValues], amax = 0.0f;
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      lo = std::min(lo, x[b * kBlockValues + j]);
      amax = std::max(amax, std::fabs(x[b * kBlockValues + j]));
    }
    const float dd = std::fabs(d) * 0x1.0p-11f * 1.001f + 0x1.0p-25f;
    const float dm = std::fabs(m) * 0x1.0p-11f + 0x1.0p-25f;
    const float bound = (q40 ? 1.0f : 0.5f) * std::fabs(d) + (cmax + 1.0f) * dd + dm +
                        8 * kEps * (amax + std::fabs(lo) + std::fabs(d) * cmax) + kTiny;
    for (std::size_t j = 0; j < kBlockValues; ++j) {
      const float err = std::fabs(x[b * kBlockValues + j] - y[b * kBlockValues + j]);
      if (!(err <= bound))
        bug(std::string(Block::name) + ": block " + std::to_string(b) + " value " + std::to_string(j) +
            " error " + std::to_string(err) + " > bound " + std::to_string(bound));
    }
  }
}

// Per-channel: every value within half its channel's decoded scale, plus
// float rounding of x - m_c and of s_c * k + m_c.
template <unsigned Bits>
void check_per_channel(const kvq::AnyCodec& c, const float* x, const std::byte* tile, const float* y) {
  const std::size_t D = c.head_dim(), G = c.tokens_per_tile();
  const auto meta = kvq::reference::read_meta<Bits>(tile, D, G);
  constexpr float nmax = (1 << Bits) - 1;
  for (std::size_t t = 0; t < G; ++t)
    for (std::size_t ch = 0; ch < D; ++ch) {
      const float s = meta.scale[ch], m = meta.offset[ch], v = x[t * D + ch];
      const float bound = 0.5f * s + 8 * kEps * (std::fabs(v) + std::fabs(m) + s * nmax) + kTiny;
      const float err = std::fabs(v - y[t * D + ch]);
      if (!(err <= bound))
        bug(std::string(c.name()) + ": token " + std::to_string(t) + " channel " + std::to_string(ch) +
            " error " + std::to_string(err) + " > bound " + std::to_string(bound));
    }
}

void check_bound(const kvq::AnyCodec& c, const float* x, const std::byte* tile, const float* y) {
  if (c.get_if<kvq::Q8_0>()) check_uniform<kvq::reference::Q8_0Block>(c, x, tile, y);
  else if (c.get_if<kvq::Q4_0>()) check_uniform<kvq::reference::Q4_0Block>(c, x, tile, y);
  else if (c.get_if<kvq::Q4_1>()) check_uniform<kvq::reference::Q4_1Block>(c, x, tile, y);
  else if (c.get_if<kvq::Q3_1>()) check_uniform<kvq::reference::Q3_1Block>(c, x, tile, y);
  else if (c.get_if<kvq::Q2_1>()) check_uniform<kvq::reference::Q2_1Block>(c, x, tile, y);
  else if (c.get_if<kvq::PC4>()) check_per_channel<4>(c, x, tile, y);
  else if (c.get_if<kvq::PC3>()) check_per_channel<3>(c, x, tile, y);
  else if (c.get_if<kvq::PC2>()) check_per_channel<2>(c, x, tile, y);
  // Other families: finiteness only (checked by the caller).
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  const auto codec = pick_codec(in);
  if (!codec) return 0;
  const std::size_t n = codec->tokens_per_tile() * codec->head_dim();
  std::vector<float> x(n, 0.0f);
  const std::size_t nf = in.remaining() / 4;
  bool finite = true;
  for (std::size_t i = 0; i < n && nf > 0; ++i) {
    std::memcpy(&x[i], in.rest() + 4 * (i % nf), 4);
    finite = finite && std::isfinite(x[i]);
  }

  const std::byte fill{0xA5};
  std::vector<std::byte> tile(codec->bytes_per_tile(), fill);
  const std::string what = std::string(codec->name()) + " d=" + std::to_string(codec->head_dim()) + ": ";
  try {
    codec->encode_tile(x.data(), tile.data());
  } catch (const kvq::Error& e) {
    check(std::all_of(tile.begin(), tile.end(), [&](std::byte b) { return b == fill; }),
          what + "a refused encode wrote output bytes");
    if (!finite) check(e.code() == kvq::Errc::non_finite, what + "non-finite input refused with the wrong code");
    else check(e.code() == kvq::Errc::out_of_range, what + "finite input refused with " +
                                                        std::string(kvq::to_string(e.code())));
    return 0;
  }
  check(finite, what + "encoded a tile holding NaN/Inf");
  std::vector<std::byte> again(tile.size());
  codec->encode_tile(x.data(), again.data());
  check(again == tile, what + "encode is not deterministic");
  std::vector<float> y(n);
  codec->decode_tile(tile.data(), y.data());
  check(all_finite(y), what + "a successful encode decoded to a non-finite value");
  check_bound(*codec, x.data(), tile.data(), y.data());
  return 0;
}
