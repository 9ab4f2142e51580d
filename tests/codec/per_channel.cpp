// Per-channel K tile codecs: a golden tile worked out by hand, the round-trip
// bound against the *decoded* (double-quantized) scale, re-encoding stability,
// refusal of bad input with nothing written, degenerate tiles, registry names.
#include "kvq_test.hpp"
#include "support/tile_bytes.hpp"

#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {
namespace ref = kvq::reference;

using kvq::test::encode_bytes;

// K-like tiles: per-channel offsets, per-channel spread, a few outlier channels,
// and (kind 2) some constant channels.
std::vector<float> k_tile(kvq::Rng& rng, std::size_t dim, std::size_t g, int kind) {
  std::vector<float> off(dim), spread(dim), x(dim * g);
  for (std::size_t c = 0; c < dim; ++c) {
    off[c] = static_cast<float>((kind == 0 ? 0.5 : 4.0) * rng.normal());
    spread[c] = static_cast<float>(0.05 + rng.uniform() * 2);
    if (kind >= 1 && c % 16 == 3) off[c] *= 10;  // bias outlier channels
    if (kind >= 1 && c % 16 == 7) spread[c] *= 20;
    if (kind == 2 && c % 8 == 5) spread[c] = 0;  // constant channel
  }
  for (std::size_t t = 0; t < g; ++t)
    for (std::size_t c = 0; c < dim; ++c) x[t * dim + c] = static_cast<float>(off[c] + spread[c] * rng.normal());
  return x;
}

template <class C>
kvq::Error refusal(const C& codec, const std::vector<float>& x, std::vector<std::byte>& out) {
  try {
    codec.encode_tile(x.data(), out.data());
  } catch (const kvq::Error& e) {
    return e;
  }
  FAIL("bad input accepted");
  return kvq::Error(kvq::Errc::invalid_argument, "");
}
}  // namespace

TEST_CASE("pc4: golden tile worked out by hand", "[codec][per_channel][pc4]") {
  // D = 8 channels, G = 32 tokens. Channel c has minimum lo_c and step u_c / 64
  // and token t holds code k(t, c), so x = lo_c + (u_c / 64) k exactly:
  //   offsets lo = 0 51 102 153 204 255 0 0: Mmin = 0, Md = (255 - 0) / 255 = 1
  //     (fp16 0x3C00), v_c = lo_c;
  //   scales u/64 with u = 0 64 128 255 32 16 1 100 (channel 0 is constant):
  //     Smin = 0, Sd = 3.984375 / 255 = 1/64 (fp16 0x2400), u_c as given.
  // The codes are whole steps from the decoded offset, so they come back exactly:
  //   k(t, c) = (7t + 3c) % 16 for t < 16, (3t + c) % 16 for t >= 16, 0 in channel 0.
  const std::vector<int> lo = {0, 51, 102, 153, 204, 255, 0, 0};
  const std::vector<int> u = {0, 64, 128, 255, 32, 16, 1, 100};
  auto code = [](int t, int c) { return c == 0 ? 0 : t < 16 ? (7 * t + 3 * c) % 16 : (3 * t + c) % 16; };
  std::vector<float> x(8 * 32);
  for (int t = 0; t < 32; ++t)
    for (int c = 0; c < 8; ++c) x[t * 8 + c] = static_cast<float>(lo[c] + u[c] / 64.0 * code(t, c));

  std::vector<std::uint8_t> expect;
  // Channel 1's run, written out: k(t,1) = 3 10 1 8 15 6 13 4 11 2 9 0 7 14 5 12 (t < 16)
  // and 1 4 7 10 13 0 3 6 9 12 15 2 5 8 11 14 (t >= 16); byte j = k(j) | k(j+16) << 4.
  const std::vector<std::uint8_t> run1 = {0x13, 0x4A, 0x71, 0xA8, 0xDF, 0x06, 0x3D, 0x64,
                                          0x9B, 0xC2, 0xF9, 0x20, 0x57, 0x8E, 0xB5, 0xEC};
  for (int c = 0; c < 8; ++c)
    for (int j = 0; j < 16; ++j) expect.push_back(static_cast<std::uint8_t>(code(j, c) | code(j + 16, c) << 4));
  CHECK(std::equal(run1.begin(), run1.end(), expect.begin() + 16));
  CHECK(std::all_of(expect.begin(), expect.begin() + 16, [](std::uint8_t b) { return b == 0; }));
  for (int c = 0; c < 8; ++c) expect.push_back(static_cast<std::uint8_t>(u[c]));
  for (int c = 0; c < 8; ++c) expect.push_back(static_cast<std::uint8_t>(lo[c]));
  for (std::uint8_t b : {0x00, 0x24, 0x00, 0x00, 0x00, 0x3C, 0x00, 0x00}) expect.push_back(b);  // Sd Smin Md Mmin

  const kvq::PC4 codec(8, 32);
  REQUIRE(codec.bytes_per_tile() == 8 * 16 + 16 + 8);
  CHECK(encode_bytes(codec, x) == expect);
  std::vector<std::byte> enc(codec.bytes_per_tile());
  std::vector<float> y(x.size());
  codec.encode_tile(x.data(), enc.data());
  codec.decode_tile(enc.data(), y.data());
  CHECK(y == x);
}

TEST_CASE("per_channel: bits per value", "[codec][per_channel]") {
  // b + 16/G + 64/(G D): codes, two 8-bit metadata bytes per channel, four fp16 per tile.
  CHECK(kvq::PC4(128, 128).bytes_per_tile() == 8456);
  CHECK(kvq::bits_per_value(kvq::PC4(128, 128)) == 4.12890625);
  CHECK(kvq::bits_per_value(kvq::PC4(128, 128)) <= 4.25);
  CHECK(kvq::bits_per_value(kvq::PC4(64, 128)) == 4.0 + 16.0 / 128 + 64.0 / (128 * 64));
  CHECK(kvq::bits_per_value(kvq::PC3(128, 64)) == 3.0 + 16.0 / 64 + 64.0 / (64 * 128));
  CHECK(kvq::bits_per_value(kvq::PC2(64, 32)) == 2.0 + 16.0 / 32 + 64.0 / (32 * 64));
  CHECK(kvq::PC4(64).tokens_per_tile() == 128);
}

TEMPLATE_TEST_CASE("per_channel: round trip within half a step of the decoded scale",
                   "[codec][per_channel]", kvq::PC4, kvq::PC3, kvq::PC2) {
  constexpr unsigned B = TestType::bits;
  constexpr int nmax = (1 << B) - 1;
  kvq::Rng rng(21);
  for (std::size_t g : {32u, 64u, 128u}) {
    for (std::size_t dim : {8u, 64u, 128u}) {
      const TestType codec(dim, g);
      std::vector<std::byte> enc(codec.bytes_per_tile());
      std::vector<float> y(dim * g);
      for (int trial = 0; trial < 6; ++trial) {
        const auto x = k_tile(rng, dim, g, trial % 3);
        codec.encode_tile(x.data(), enc.data());
        codec.decode_tile(enc.data(), y.data());
        const auto meta = ref::read_meta<B>(enc.data(), dim, g);
        const std::byte* h = enc.data() + enc.size() - 8;
        const float sd = kvq::half_bits_to_float(kvq::bits::load_u16(h));
        const float md = kvq::half_bits_to_float(kvq::bits::load_u16(h + 4));
        for (std::size_t c = 0; c < dim; ++c) {
          float lo = FLT_MAX, hi = -FLT_MAX;
          for (std::size_t t = 0; t < g; ++t) {
            lo = std::min(lo, x[t * dim + c]);
            hi = std::max(hi, x[t * dim + c]);
          }
          const float s = meta.scale[c], m = meta.offset[c];
          REQUIRE(m <= lo);  // offsets rounded down
          REQUIRE(m + nmax * s >= hi * (1 - 1e-6f) - 1e-6f);  // grid reaches the channel maximum
          // Double quantization costs at most one metadata step over the ideal scale.
          REQUIRE(s <= ((hi - lo) + md) / nmax * (1 + 1e-5f) + sd + 1e-7f);
          const double slack = 4 * FLT_EPSILON * (std::fabs(m) + nmax * s + std::fabs(hi));
          for (std::size_t t = 0; t < g; ++t)
            REQUIRE(std::fabs(double(x[t * dim + c]) - y[t * dim + c]) <= 0.5 * s + slack);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("per_channel: encode -> decode -> encode", "[codec][per_channel]", kvq::PC4, kvq::PC3,
                   kvq::PC2) {
  constexpr unsigned B = TestType::bits;
  constexpr int nmax = (1 << B) - 1;
  kvq::Rng rng(8);
  for (std::size_t g : {32u, 128u}) {
    const TestType codec(64, g);
    std::vector<std::byte> e1(codec.bytes_per_tile()), e2(e1.size()), e3(e1.size());
    std::vector<float> y1(64 * g), y2(64 * g);

    // A tile on the codec's own grid is a fixed point, byte for byte: random
    // metadata (exact binary fractions, so decoding is exact arithmetic) whose
    // vectors span their 8-bit ranges and codes spanning 0..nmax in every channel.
    for (int trial = 0; trial < 20; ++trial) {
      const float md = static_cast<float>(1 + rng.next_u64() % 16) / 16, mmin = -static_cast<float>(rng.next_u64() % 65) / 4;
      const float sd = static_cast<float>(1 + rng.next_u64() % 8) / 256, smin = static_cast<float>(1 + rng.next_u64() % 32) / 64;
      std::vector<std::uint8_t> k(g);
      for (std::size_t c = 0; c < 64; ++c) {
        for (auto& v : k) v = static_cast<std::uint8_t>(rng.next_u64() % (nmax + 1));
        k[rng.next_u64() % (g / 2)] = 0;
        k[g / 2 + rng.next_u64() % (g / 2)] = nmax;
        ref::pack_run<B>(k.data(), g, e1.data() + c * ref::per_channel_run_bytes<B>(g));
      }
      std::byte* meta = e1.data() + 64 * ref::per_channel_run_bytes<B>(g);
      for (std::size_t c = 0; c < 128; ++c) meta[c] = static_cast<std::byte>(rng.next_u64() % 256);
      meta[0] = meta[64 + 2] = std::byte{0};
      meta[1] = meta[64 + 3] = std::byte{255};
      kvq::bits::store_u16(meta + 128, kvq::float_to_half_bits(sd));
      kvq::bits::store_u16(meta + 130, kvq::float_to_half_bits(smin));
      kvq::bits::store_u16(meta + 132, kvq::float_to_half_bits(md));
      kvq::bits::store_u16(meta + 134, kvq::float_to_half_bits(mmin));
      codec.decode_tile(e1.data(), y1.data());
      codec.encode_tile(y1.data(), e2.data());
      REQUIRE(e2 == e1);
    }

    // Arbitrary input: encoding is deterministic, and re-encoding its decoded
    // values loses at most half a step of the second encoding's decoded scale.
    // (Not byte-identical in general: metadata rounded toward coverage leaves
    // small channels not spanning 0..nmax, so the second pass finds a tighter grid.)
    for (int trial = 0; trial < 30; ++trial) {
      const auto x = k_tile(rng, 64, g, trial % 3);
      codec.encode_tile(x.data(), e1.data());
      codec.encode_tile(x.data(), e3.data());
      REQUIRE(e1 == e3);
      codec.decode_tile(e1.data(), y1.data());
      codec.encode_tile(y1.data(), e2.data());
      codec.decode_tile(e2.data(), y2.data());
      const auto meta = ref::read_meta<B>(e2.data(), 64, g);
      for (std::size_t t = 0; t < g; ++t)
        for (std::size_t c = 0; c < 64; ++c)
          REQUIRE(std::fabs(y2[t * 64 + c] - y1[t * 64 + c]) <= 0.5 * meta.scale[c] * (1 + 1e-5) + 1e-5);
    }
  }
}

TEMPLATE_TEST_CASE("per_channel: bad input is refused before anything is written", "[codec][per_channel]",
                   kvq::PC4, kvq::PC3, kvq::PC2) {
  auto code_of = [](auto&& make) {
    try {
      make();
    } catch (const kvq::Error& e) {
      return e.code();
    }
    return kvq::Errc::io_error;  // "not refused"
  };
  for (std::size_t g : {0u, 1u, 16u, 48u, 100u, 2048u})
    CHECK(code_of([&] { TestType c(64, g); }) == kvq::Errc::invalid_argument);
  for (std::size_t dim : {0u, 4u, 12u, 100u})
    CHECK(code_of([&] { TestType c(dim, 64); }) == kvq::Errc::shape_mismatch);

  const TestType codec(16, 32);
  std::vector<std::byte> out(codec.bytes_per_tile(), std::byte{0x5A});
  const auto untouched = out;
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> x(16 * 32, 1.0f);
    x[16 * 31 + 15] = bad;  // the very last value
    CHECK(refusal(codec, x, out).code() == kvq::Errc::non_finite);
    CHECK(out == untouched);
  }
  // Metadata overflowing fp16: a huge range (the step of steps overflows) and a
  // channel minimum below -65504 (the offset base overflows).
  for (float huge : {3.0e37f, 1.0e9f, -70000.0f}) {
    std::vector<float> x(16 * 32, 1.0f);
    x[16 * 20 + 9] = huge;
    CHECK(refusal(codec, x, out).code() == kvq::Errc::out_of_range);
    CHECK(out == untouched);
  }
  // Large but representable values are accepted and reproduced within the bound.
  std::vector<float> big(16 * 32);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = (i % 16 == 3) ? 60000.0f - float(i) : float(i % 7) - 65000.0f;
  std::vector<float> y(big.size());
  codec.encode_tile(big.data(), out.data());
  codec.decode_tile(out.data(), y.data());
  const auto meta = ref::read_meta<TestType::bits>(out.data(), 16, 32);
  for (std::size_t i = 0; i < big.size(); ++i) REQUIRE(std::fabs(y[i] - big[i]) <= 0.5f * meta.scale[i % 16] + 0.02f);
}

TEMPLATE_TEST_CASE("per_channel: all-zero tiles and constant channels", "[codec][per_channel]", kvq::PC4,
                   kvq::PC3, kvq::PC2) {
  const TestType codec(64, 32);
  std::vector<std::byte> enc(codec.bytes_per_tile());
  std::vector<float> y(64 * 32);
  const std::vector<float> zero(64 * 32, 0.0f);
  codec.encode_tile(zero.data(), enc.data());
  CHECK(std::all_of(enc.begin(), enc.end(), [](std::byte b) { return b == std::byte{0}; }));
  codec.decode_tile(enc.data(), y.data());
  CHECK(y == zero);

  // Every channel constant (different constants): error within half the decoded
  // step, and that step is at most one offset step / nmax (tiny).
  std::vector<float> x(64 * 32);
  for (std::size_t t = 0; t < 32; ++t)
    for (std::size_t c = 0; c < 64; ++c) x[t * 64 + c] = 0.37f * static_cast<float>(c) - 5.0f;
  codec.encode_tile(x.data(), enc.data());
  codec.decode_tile(enc.data(), y.data());
  const auto meta = ref::read_meta<TestType::bits>(enc.data(), 64, 32);
  for (std::size_t c = 0; c < 64; ++c) {
    REQUIRE(meta.scale[c] <= 23.31f / 255 / ((1 << TestType::bits) - 1) * 1.01f + 1e-6f);
    for (std::size_t t = 0; t < 32; ++t)
      REQUIRE(std::fabs(y[t * 64 + c] - x[t * 64 + c]) <= 0.5f * meta.scale[c] + 1e-5f);
  }
  // One constant value everywhere, on the fp16 grid: reproduced exactly.
  const std::vector<float> flat(64 * 32, -2.5f);
  codec.encode_tile(flat.data(), enc.data());
  codec.decode_tile(enc.data(), y.data());
  CHECK(y == flat);
}

TEST_CASE("per_channel: registry names and /gN tile lengths", "[codec][per_channel][registry]") {
  const kvq::AnyCodec a = kvq::make_codec("pc4", 128);
  CHECK(a.name() == "pc4");
  CHECK(a.tokens_per_tile() == 128);
  CHECK(a.bits_per_value() == 4.12890625);
  const kvq::AnyCodec b = kvq::make_codec("pc3/g64", 64);
  CHECK(b.name() == "pc3");
  CHECK(b.tokens_per_tile() == 64);
  CHECK(b.get_if<kvq::PC3>() != nullptr);
  CHECK(kvq::make_codec("pc2/g32", 128).bytes_per_tile() == kvq::PC2(128, 32).bytes_per_tile());
  for (const char* bad : {"pc4/g48", "pc4/g", "pc4/x64", "q4_0/g64", "pc5/g64", "pc4/g99999999"})
    CHECK_THROWS_AS(kvq::make_codec(bad, 128), kvq::Error);

  // Typed and type-erased paths agree byte for byte and score for score.
  kvq::Rng rng(4);
  const kvq::PC4 typed(64, 64);
  const kvq::AnyCodec any = kvq::make_codec("pc4/g64", 64);
  const auto x = k_tile(rng, 64, 64, 1);
  std::vector<std::byte> t1(typed.bytes_per_tile()), t2(any.bytes_per_tile());
  typed.encode_tile(x.data(), t1.data());
  any.encode_tile(x.data(), t2.data());
  CHECK(t1 == t2);
  std::vector<float> q(64), qw(64), s1(64), s2(64);
  for (auto& v : q) v = static_cast<float>(rng.normal());
  typed.scores(q.data(), t1.data(), s1.data());
  any.prepare_query(q.data(), qw.data());
  any.scores(qw.data(), t2.data(), s2.data());
  CHECK(s1 == s2);
}
