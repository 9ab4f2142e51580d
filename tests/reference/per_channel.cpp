// The reference per-channel kernels (scores over a whole tile, weighted
// accumulation) against an independent double-precision computation on the
// decoded tile, and the bit packing of the code runs against hand-made bytes.
#include "kvq_test.hpp"

#include <kvq/core/rng.hpp>
#include <kvq/reference/per_channel.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref = kvq::reference;

namespace {
template <unsigned Bits>
void check_kernels(std::size_t dim, std::size_t g, std::uint64_t seed) {
  kvq::Rng rng(seed);
  std::vector<float> x(dim * g), y(dim * g), q(dim), out(g), w(g);
  std::vector<float> bias(dim);
  for (auto& b : bias) b = static_cast<float>(3 * rng.normal());
  std::vector<std::byte> tile(ref::per_channel_tile_bytes<Bits>(dim, g));
  for (int trial = 0; trial < 5; ++trial) {
    for (std::size_t t = 0; t < g; ++t)
      for (std::size_t c = 0; c < dim; ++c) x[t * dim + c] = static_cast<float>(bias[c] + (1 + c % 5) * rng.normal());
    for (auto& v : q) v = static_cast<float>(rng.normal());
    REQUIRE(ref::try_encode_tile<Bits>(x.data(), dim, g, tile.data()));
    ref::decode_tile<Bits>(tile.data(), dim, g, y.data());
    // The factored kernels add s*k and m separately: their rounding scales with |m| too.
    const auto meta = ref::read_meta<Bits>(tile.data(), dim, g);

    ref::scores<Bits>(q.data(), tile.data(), dim, g, out.data());
    for (std::size_t t = 0; t < g; ++t) {
      double exact = 0, mag = 0;
      for (std::size_t c = 0; c < dim; ++c) {
        exact += double(q[c]) * y[t * dim + c];
        mag += std::fabs(double(q[c])) * (std::fabs(y[t * dim + c]) + 2 * std::fabs(meta.offset[c]));
      }
      REQUIRE(std::fabs(out[t] - exact) <= 1e-5 * mag + 1e-6);
    }

    std::vector<float> acc(dim), before(dim);
    for (auto& v : acc) v = static_cast<float>(rng.normal());
    before = acc;
    for (auto& v : w) v = static_cast<float>(rng.uniform());
    ref::accumulate<Bits>(acc.data(), w.data(), tile.data(), dim, g);
    for (std::size_t c = 0; c < dim; ++c) {
      double exact = before[c], mag = std::fabs(before[c]);
      for (std::size_t t = 0; t < g; ++t) {
        exact += double(w[t]) * y[t * dim + c];
        mag += double(w[t]) * (std::fabs(y[t * dim + c]) + 2 * std::fabs(meta.offset[c]));
      }
      REQUIRE(std::fabs(acc[c] - exact) <= 1e-5 * mag + 1e-6);
    }
  }
}
}  // namespace

TEST_CASE("reference per_channel: scores and accumulate equal the decoded tile in double",
          "[reference][per_channel]") {
  for (std::size_t g : {32u, 64u, 128u}) {
    for (std::size_t dim : {8u, 64u, 128u}) {
      check_kernels<4>(dim, g, 100 + g + dim);
      check_kernels<3>(dim, g, 200 + g + dim);
      check_kernels<2>(dim, g, 300 + g + dim);
    }
  }
}

TEST_CASE("reference per_channel: code runs pack as specified", "[reference][per_channel]") {
  std::vector<std::uint8_t> k(32), back(32);
  std::vector<std::byte> run(16);
  auto u8 = [&](std::size_t i) { return static_cast<unsigned>(run[i]); };
  // 2 bits, k[t] = t % 4: byte j = k[j] | k[j+8] << 2 | k[j+16] << 4 | k[j+24] << 6 = (j % 4) * 0x55.
  for (int t = 0; t < 32; ++t) k[t] = static_cast<std::uint8_t>(t % 4);
  ref::pack_run<2>(k.data(), 32, run.data());
  for (std::size_t j = 0; j < 8; ++j) CHECK(u8(j) == (j % 4) * 0x55u);
  ref::unpack_run<2>(run.data(), 32, back.data());
  CHECK(back == k);
  // 3 bits, k[t] = t % 8: low planes as above; bit 2 is set for t % 8 >= 4, so each high byte is 0xF0.
  for (int t = 0; t < 32; ++t) k[t] = static_cast<std::uint8_t>(t % 8);
  ref::pack_run<3>(k.data(), 32, run.data());
  for (std::size_t j = 0; j < 8; ++j) CHECK(u8(j) == (j % 4) * 0x55u);
  for (std::size_t j = 8; j < 12; ++j) CHECK(u8(j) == 0xF0u);
  ref::unpack_run<3>(run.data(), 32, back.data());
  CHECK(back == k);
  // 4 bits, k[t] = t / 2: byte j = k[j] | k[j+16] << 4 = (j/2) | (8 + j/2) << 4.
  for (int t = 0; t < 32; ++t) k[t] = static_cast<std::uint8_t>(t / 2);
  ref::pack_run<4>(k.data(), 32, run.data());
  for (std::size_t j = 0; j < 16; ++j) CHECK(u8(j) == ((j / 2) | ((8 + j / 2) << 4)));
  ref::unpack_run<4>(run.data(), 32, back.data());
  CHECK(back == k);
}

TEST_CASE("reference per_channel: directed fp16 rounding", "[reference][per_channel]") {
  using ref::detail::half_bits_down;
  using ref::detail::half_bits_up;
  for (float v : {0.0f, 1.0f, -1.0f, 0.1f, -0.1f, 3.0e-8f, -3.0e-8f, 1000.3f, -65504.0f, 65504.0f, 1e-12f}) {
    const float lo = kvq::half_bits_to_float(half_bits_down(v));
    const float hi = kvq::half_bits_to_float(half_bits_up(v));
    CHECK(lo <= v);
    CHECK(hi >= v);
    CHECK(hi - lo <= std::fabs(v) * 0x1.0p-10f + 0x1.0p-24f);
  }
  CHECK(half_bits_down(-65520.0f) == 0xFC00u);  // below the fp16 range: -Inf, refused by the encoder
  CHECK(half_bits_up(65505.0f) == 0x7C00u);
  CHECK(half_bits_down(0.0f) == 0x0000u);
}

TEST_CASE("reference per_channel: hostile metadata decodes without undefined behaviour",
          "[reference][per_channel]") {
  std::vector<std::byte> tile(ref::per_channel_tile_bytes<4>(8, 32), std::byte{0xA7});
  std::vector<float> y(8 * 32), s(32);
  std::vector<float> q(8, 1.0f);
  int nonfinite = 0;
  for (unsigned h = 0; h < 65536; h += 251) {
    kvq::bits::store_u16(tile.data() + tile.size() - 8, static_cast<std::uint16_t>(h));
    ref::decode_tile<4>(tile.data(), 8, 32, y.data());
    ref::scores<4>(q.data(), tile.data(), 8, 32, s.data());
    nonfinite += !std::isfinite(y[0]);
  }
  CHECK(nonfinite > 0);  // Inf/NaN scale steps come out as non-finite values for callers to check
}
