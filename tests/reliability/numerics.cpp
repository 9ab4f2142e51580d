// Numerics under bad input, for every codec in codec_table(): the behaviour
// table of docs/RELIABILITY.md ("Numerics under bad input"), one section per row.
//
// Everything goes through AnyCodec, so a codec added to the registry is held
// to the same table without editing this file. K and V go through the same
// encode path (a codec does not know which it stores), so "in K" and "in V"
// are one test; Q only meets the codecs through prepare_query/scores.
#include "kvq_test.hpp"
#include "support/same_bits.hpp"

#include <kvq/codec/registry.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Every registered codec at head_dim 64 and 128, and the tile codecs also at
// their smallest tile length.
std::vector<std::pair<std::string, std::size_t>> all_codecs() {
  std::vector<std::pair<std::string, std::size_t>> out;
  for (const auto& info : kvq::codec_table())
    for (std::size_t dim : {64u, 128u}) {
      out.emplace_back(std::string(info.name), dim);
      if (info.family == "per-channel") out.emplace_back(std::string(info.name) + "/g32", dim);
    }
  return out;
}

std::vector<float> gaussian_tile(kvq::Rng& rng, const kvq::AnyCodec& c, double sigma = 1.0) {
  std::vector<float> x(c.tokens_per_tile() * c.head_dim());
  for (auto& v : x) v = static_cast<float>(sigma * rng.normal());
  return x;
}

kvq::Errc refusal(const kvq::AnyCodec& c, const std::vector<float>& x, std::vector<std::byte>& out) {
  try {
    c.encode_tile(x.data(), out.data());
  } catch (const kvq::Error& e) {
    return e.code();
  }
  FAIL("encode_tile accepted the tile");
  return kvq::Errc::io_error;
}

// Families whose formats reproduce constants (uniform: scale 0 and an exact
// minimum or a one-code grid; per-channel: scale 0). Rotated formats spread a
// constant over all coordinates and are held to finiteness only.
bool reproduces_constants(std::string_view codec_name) {
  const std::string_view base = codec_name.substr(0, codec_name.find('/'));
  for (const auto& info : kvq::codec_table())
    if (info.name == base) return info.family == "uniform" || info.family == "per-channel";
  return false;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}
using kvq::test::same_bits;

}  // namespace

TEST_CASE("numerics: NaN and Inf in K/V are refused with non_finite, nothing written", "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    kvq::Rng rng(1);
    const auto good = gaussian_tile(rng, c);
    std::vector<std::byte> out(c.bytes_per_tile(), std::byte{0x3C});
    const auto untouched = out;
    const float qnan = std::numeric_limits<float>::quiet_NaN(), snan = std::numeric_limits<float>::signaling_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    for (float bad : {qnan, -qnan, snan, inf, -inf})
      for (std::size_t at : {std::size_t{0}, good.size() / 2 + 3, good.size() - 1}) {
        auto x = good;
        x[at] = bad;
        CHECK(refusal(c, x, out) == kvq::Errc::non_finite);
        CHECK(out == untouched);
      }
  }
}

TEST_CASE("numerics: subnormal inputs encode and decode to finite values near them", "[reliability][numerics]") {
  const float tiny = std::numeric_limits<float>::denorm_min(), sub = 1e-39f;
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    const std::size_t n = c.tokens_per_tile() * dim;
    std::vector<std::byte> enc(c.bytes_per_tile());
    std::vector<float> y(n);
    // All subnormal (mixed signs and zeros), and subnormals beside normal values.
    for (int mix = 0; mix < 3; ++mix) {
      std::vector<float> x(n);
      for (std::size_t i = 0; i < n; ++i) {
        const float s = (i % 3 == 0) ? sub : (i % 3 == 1) ? -tiny * float(i % 97) : 0.0f;
        x[i] = mix == 0 ? s : mix == 1 ? (i % 32 == 7 ? 3e-37f : s) : (i % 5 == 0 ? 0.75f : s);
      }
      c.encode_tile(x.data(), enc.data());
      c.decode_tile(enc.data(), y.data());
      REQUIRE(all_finite(y));
      // fp16 metadata cannot hold subnormal floats: they decode to (about) zero.
      // Beside normal values, block codecs keep each value within half a step
      // of the block's range; rotated (turbo) codecs spread error over the row,
      // so for them the bound is on the row: the codebook's relative L2 error
      // (at most ~0.4 at 2 bits) with margin.
      const bool rotated = std::any_of(kvq::codec_table().begin(), kvq::codec_table().end(),
                                       [&](const auto& info) { return info.name == name && info.family == "turbo"; });
      if (mix == 2 && !rotated) {
        for (std::size_t i = 0; i < n; ++i) REQUIRE(std::fabs(y[i] - x[i]) <= 0.75f / 2);
      } else if (mix == 2) {
        double err = 0, norm = 0;
        for (std::size_t i = 0; i < n; ++i) {
          err += double(y[i] - x[i]) * (y[i] - x[i]);
          norm += double(x[i]) * x[i];
        }
        REQUIRE(std::sqrt(err / norm) <= 0.6);
      } else {
        for (std::size_t i = 0; i < n; ++i) REQUIRE(std::fabs(y[i] - x[i]) <= 1e-7f);
      }
    }
  }
}

TEST_CASE("numerics: regression -- q8_0/q4_x/q3_1/q2_1 steps below 2^-128 encode with defined codes",
          "[reliability][numerics]") {
  // The block step d = range / (2^b - 1) was inverted in float; below 2^-128
  // 1/d overflowed and x * (1/d) became Inf/NaN, converted to int8: undefined
  // behaviour (found by fuzz/codec_encode under clang's UBSan). Now such a
  // block (whose fp16 step is 0 anyway) gets codes 0, and decodes to its minimum.
  for (const char* name : {"q8_0", "q4_0", "q4_1", "q3_1", "q2_1"}) {
    INFO(name);
    const kvq::AnyCodec c = kvq::make_codec(name, 32);
    std::vector<float> x(32, 0.0f);
    x[5] = 1e-39f;  // steps: q8_0 7.9e-42, q4_0 -1.25e-40, q4_1 8e-41, q3_1 1.7e-40, q2_1 4e-40
    x[6] = -2e-40f;
    std::vector<std::byte> enc(c.bytes_per_tile(), std::byte{0x77});
    std::vector<float> y(32, 1.0f);
    c.encode_tile(x.data(), enc.data());
    c.decode_tile(enc.data(), y.data());
    const std::string n = name;
    const std::size_t header = (n == "q8_0" || n == "q4_0") ? 2 : 4;
    for (std::size_t i = 0; i < header; i += 2)  // fp16 step and minimum: (signed) zero
      CHECK((std::to_integer<unsigned>(enc[i]) | (std::to_integer<unsigned>(enc[i + 1]) << 8) | 0x8000u) == 0x8000u);
    // Codes: 0 (q4_0 stores code 0 as nibble 8).
    const unsigned zero_code = n == "q4_0" ? 0x88u : 0u;
    for (std::size_t i = header; i < enc.size(); ++i) CHECK(std::to_integer<unsigned>(enc[i]) == zero_code);
    for (float v : y) CHECK(v == 0.0f);
  }
}

TEST_CASE("numerics: huge values are refused with out_of_range or reproduced within fp16 range",
          "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    kvq::Rng rng(3);
    std::vector<std::byte> out(c.bytes_per_tile(), std::byte{0x11});
    const auto untouched = out;
    for (float huge : {1e30f, -1e30f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()}) {
      auto x = gaussian_tile(rng, c);
      x[x.size() / 3] = huge;
      CHECK(refusal(c, x, out) == kvq::Errc::out_of_range);
      CHECK(out == untouched);
    }
    // Large but fp16-representable: accepted, finite, relative error bounded.
    auto x = gaussian_tile(rng, c, 3000.0);
    std::vector<float> y(x.size());
    c.encode_tile(x.data(), out.data());
    c.decode_tile(out.data(), y.data());
    REQUIRE(all_finite(y));
    float amax = 0, err = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      amax = std::max(amax, std::fabs(x[i]));
      err = std::max(err, std::fabs(x[i] - y[i]));
    }
    CHECK(err <= amax);  // 2-bit codecs: half a step of a range ~ 2 * amax
  }
}

TEST_CASE("numerics: all-zero tiles decode to zeros, score 0 and add nothing", "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    const std::size_t g = c.tokens_per_tile(), n = g * dim;
    const std::vector<float> zero(n, 0.0f);
    std::vector<std::byte> enc(c.bytes_per_tile(), std::byte{0xEE});
    std::vector<float> y(n, 1.0f), q(dim), qw(dim), s(g, 1.0f), w(g, 0.5f), acc(dim, 2.0f);
    kvq::Rng rng(4);
    for (auto& v : q) v = static_cast<float>(rng.normal());
    c.encode_tile(zero.data(), enc.data());
    c.decode_tile(enc.data(), y.data());
    CHECK(y == zero);
    c.prepare_query(q.data(), qw.data());
    c.scores(qw.data(), enc.data(), s.data());
    for (float v : s) CHECK(v == 0.0f);
    c.accumulate(acc.data(), w.data(), enc.data());
    for (float v : acc) CHECK(v == 2.0f);
  }
}

TEST_CASE("numerics: constant rows and constant channels", "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    const std::size_t g = c.tokens_per_tile(), n = g * dim;
    std::vector<std::byte> enc(c.bytes_per_tile());
    std::vector<float> y(n);
    // Every value the same: reproduced to fp16 precision of the value.
    for (float k : {1.5f, -2.75f, 1000.0f, 0.3f}) {
      const std::vector<float> x(n, k);
      c.encode_tile(x.data(), enc.data());
      c.decode_tile(enc.data(), y.data());
      REQUIRE(all_finite(y));
      if (reproduces_constants(name))
        for (float v : y) REQUIRE(std::fabs(v - k) <= std::fabs(k) * 0x1.0p-9f);
    }
    // One constant channel inside Gaussian data: finite, and for tile codecs
    // (per-channel statistics) every token of it decodes to the same value.
    kvq::Rng rng(5);
    auto x = gaussian_tile(rng, c);
    for (std::size_t t = 0; t < g; ++t) x[t * dim + 3] = 0.8125f;
    c.encode_tile(x.data(), enc.data());
    c.decode_tile(enc.data(), y.data());
    REQUIRE(all_finite(y));
    if (!reproduces_constants(name)) continue;
    for (std::size_t t = 0; t < g; ++t) {
      CHECK(std::fabs(y[t * dim + 3] - 0.8125f) <= 0.75f);  // at worst half a 2-bit step of the row
      if (g > 1) CHECK(y[t * dim + 3] == y[3]);
    }
  }
}

TEST_CASE("numerics: a NaN/Inf query poisons only its own scores", "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    const std::size_t g = c.tokens_per_tile();
    kvq::Rng rng(6);
    // Two tiles, two queries.
    std::vector<std::vector<std::byte>> tiles(2, std::vector<std::byte>(c.bytes_per_tile()));
    for (auto& t : tiles) {
      const auto x = gaussian_tile(rng, c);
      c.encode_tile(x.data(), t.data());
    }
    std::vector<float> good(dim), q(dim), gw(dim), qw(dim), before(2 * g), after(2 * g), bad(2 * g);
    for (auto& v : good) v = static_cast<float>(rng.normal());
    c.prepare_query(good.data(), gw.data());
    for (std::size_t t = 0; t < 2; ++t) c.scores(gw.data(), tiles[t].data(), before.data() + t * g);
    REQUIRE(all_finite(before));
    for (float poison : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      q = good;
      q[dim / 2] = poison;
      c.prepare_query(q.data(), qw.data());
      for (std::size_t t = 0; t < 2; ++t) c.scores(qw.data(), tiles[t].data(), bad.data() + t * g);
      // The poisoned query's scores: non-finite where its channel meets a
      // nonzero value (Inf * 0 = NaN, so NaN is allowed for Inf too), never
      // a finite-looking wrong number for every token.
      CHECK(std::any_of(bad.begin(), bad.end(), [](float v) { return !std::isfinite(v); }));
      // The good query, scored after it, is bit-identical to before.
      for (std::size_t t = 0; t < 2; ++t) c.scores(gw.data(), tiles[t].data(), after.data() + t * g);
      for (std::size_t i = 0; i < 2 * g; ++i) REQUIRE(same_bits(after[i], before[i]));
    }
    // Denormal and zero queries give finite scores.
    for (float v : {0.0f, 1e-40f}) {
      std::fill(q.begin(), q.end(), v);
      c.prepare_query(q.data(), qw.data());
      for (std::size_t t = 0; t < 2; ++t) c.scores(qw.data(), tiles[t].data(), bad.data() + t * g);
      CHECK(all_finite(bad));
    }
  }
}

TEST_CASE("numerics: a hostile tile poisons only its own tokens", "[reliability][numerics]") {
  for (const auto& [name, dim] : all_codecs()) {
    INFO(name << " d=" << dim);
    const kvq::AnyCodec c = kvq::make_codec(name, dim);
    const std::size_t g = c.tokens_per_tile();
    kvq::Rng rng(7);
    std::vector<std::byte> good(c.bytes_per_tile()), hostile(c.bytes_per_tile(), std::byte{0xFF});
    const auto x = gaussian_tile(rng, c);
    c.encode_tile(x.data(), good.data());
    std::vector<float> q(dim), qw(dim), s1(g), s2(g), sh(g), w(g, 0.25f), acc(dim, 0.0f), acc2(dim, 0.0f);
    for (auto& v : q) v = static_cast<float>(rng.normal());
    c.prepare_query(q.data(), qw.data());
    c.scores(qw.data(), good.data(), s1.data());
    c.scores(qw.data(), hostile.data(), sh.data());  // all-ones bytes: fp16 NaN metadata; must not crash
    c.scores(qw.data(), good.data(), s2.data());
    for (std::size_t t = 0; t < g; ++t) REQUIRE(same_bits(s1[t], s2[t]));
    // Accumulating a hostile tile poisons that accumulator only.
    c.accumulate(acc.data(), w.data(), good.data());
    c.accumulate(acc2.data(), w.data(), hostile.data());
    c.accumulate(acc2.data(), w.data(), good.data());
    CHECK(all_finite(acc));
  }
}
