// The scalar turbo reference: golden index packing, nearest-level
// quantization, and dot/accumulate in rotated space against an independent
// double-precision computation on the decoded values.
#include "kvq_test.hpp"

#include <kvq/codec/lloyd_max_tables.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/turbo.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {
std::vector<std::uint8_t> to_u8(const std::vector<std::byte>& b) {
  std::vector<std::uint8_t> u(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) u[i] = static_cast<std::uint8_t>(b[i]);
  return u;
}
template <unsigned Bits>
std::vector<std::uint8_t> pack_pattern() {
  std::uint8_t idx[16];
  for (unsigned j = 0; j < 16; ++j) idx[j] = static_cast<std::uint8_t>(j & ((1u << Bits) - 1));
  std::vector<std::byte> out(kvq::reference::turbo_group_bytes(Bits));
  kvq::reference::turbo_pack_group<Bits>(idx, out.data());
  return to_u8(out);
}
template <unsigned Bits>
std::vector<float> thresholds_of(const float* levels) {
  std::vector<float> t;
  for (std::size_t k = 0; k + 1 < (std::size_t{1} << Bits); ++k) t.push_back(0.5f * (levels[k] + levels[k + 1]));
  return t;
}
}  // namespace

TEST_CASE("reference turbo: golden group packing of idx_j = j mod 2^bits", "[reference][turbo]") {
  // 4 bits: byte j = idx_j | idx_{j+8} << 4 = j | (j+8) << 4.
  CHECK(pack_pattern<4>() == std::vector<std::uint8_t>{0x80, 0x91, 0xA2, 0xB3, 0xC4, 0xD5, 0xE6, 0xF7});
  // 2 bits: byte j = idx_j | idx_{j+4} << 2 | idx_{j+8} << 4 | idx_{j+12} << 6, all fields = j.
  CHECK(pack_pattern<2>() == std::vector<std::uint8_t>{0x00, 0x55, 0xAA, 0xFF});
  // 3 bits: the same low plane; bit 2 of j & 7 is set for j = 4..7 and 12..15: u16 0xF0F0.
  CHECK(pack_pattern<3>() == std::vector<std::uint8_t>{0x00, 0x55, 0xAA, 0xFF, 0xF0, 0xF0});
  // 1 bit: bit j = j & 1: u16 0xAAAA.
  CHECK(pack_pattern<1>() == std::vector<std::uint8_t>{0xAA, 0xAA});
  CHECK(kvq::reference::turbo_row_bytes(4, 128) == 66);
  CHECK(kvq::reference::turbo_row_bytes(3, 128) == 50);
  CHECK(kvq::reference::turbo_row_bytes(2, 128) == 34);
  CHECK(kvq::reference::turbo_row_bytes(2, 64) == 18);
}

TEMPLATE_TEST_CASE_SIG("reference turbo: pack/unpack round trip of random indices", "[reference][turbo]",
                       ((unsigned Bits), Bits), 1, 2, 3, 4) {
  kvq::Rng rng(17);
  for (int trial = 0; trial < 200; ++trial) {
    std::uint8_t idx[16], back[16];
    for (auto& v : idx) v = static_cast<std::uint8_t>(rng.next_u64() & ((1u << Bits) - 1));
    std::vector<std::byte> g(kvq::reference::turbo_group_bytes(Bits));
    kvq::reference::turbo_pack_group<Bits>(idx, g.data());
    kvq::reference::turbo_unpack_group<Bits>(g.data(), back);
    for (int j = 0; j < 16; ++j) REQUIRE(back[j] == idx[j]);
  }
}

TEMPLATE_TEST_CASE_SIG("reference turbo: quantize picks the nearest level", "[reference][turbo]",
                       ((unsigned Bits), Bits), 1, 2, 3, 4) {
  const float* levels = kvq::lloyd_max_levels(static_cast<int>(Bits), 128);
  REQUIRE(levels != nullptr);
  const auto t = thresholds_of<Bits>(levels);
  kvq::Rng rng(4);
  for (int trial = 0; trial < 5000; ++trial) {
    const float u = static_cast<float>(rng.normal() * 1.5);
    const unsigned k = kvq::reference::turbo_quantize<Bits>(u, t.data());
    for (unsigned other = 0; other < (1u << Bits); ++other)
      REQUIRE(std::fabs(u - levels[k]) <= std::fabs(u - levels[other]) + 1e-6f);
  }
  // Extremes map to the outermost levels.
  CHECK(kvq::reference::turbo_quantize<Bits>(-100.0f, t.data()) == 0);
  CHECK(kvq::reference::turbo_quantize<Bits>(100.0f, t.data()) == (1u << Bits) - 1);
}

TEMPLATE_TEST_CASE_SIG("reference turbo: dot and accumulate equal the decoded row in double",
                       "[reference][turbo]", ((unsigned Bits), Bits), 1, 2, 3, 4) {
  kvq::Rng rng(3);
  for (std::size_t dim : {16u, 64u, 96u, 128u}) {
    const float* levels = kvq::lloyd_max_gaussian_levels(static_cast<int>(Bits));
    const auto t = thresholds_of<Bits>(levels);
    std::vector<float> y(dim), q(dim), dec(dim), acc(dim, 0.25f);
    std::vector<std::byte> row(kvq::reference::turbo_row_bytes(Bits, dim));
    for (int trial = 0; trial < 20; ++trial) {
      double n2 = 0;
      for (auto& v : y) {
        v = static_cast<float>(rng.normal() * 3);
        n2 += double(v) * v;
      }
      for (auto& v : q) v = static_cast<float>(rng.normal());
      kvq::reference::turbo_encode_rotated<Bits>(y.data(), std::sqrt(n2), dim, levels, t.data(), row.data());
      kvq::reference::turbo_decode_rotated<Bits>(row.data(), dim, levels, dec.data());
      // Norm correction: the decoded rotated vector has the input's norm (fp16 scale).
      double d2 = 0;
      for (float v : dec) d2 += double(v) * v;
      REQUIRE(std::fabs(std::sqrt(d2) / std::sqrt(n2) - 1) < 0x1.0p-11 + 1e-6);
      double exact = 0, mag = 0;
      for (std::size_t i = 0; i < dim; ++i) {
        exact += double(q[i]) * dec[i];
        mag += std::fabs(double(q[i]) * dec[i]);
      }
      const float dot = kvq::reference::turbo_dot_rotated<Bits>(q.data(), row.data(), dim, levels);
      REQUIRE(std::fabs(dot - exact) <= 1e-5 * mag + 1e-6);

      const float w = static_cast<float>(rng.uniform());
      const std::vector<float> before = acc;
      kvq::reference::turbo_accumulate_rotated<Bits>(acc.data(), w, row.data(), dim, levels);
      for (std::size_t i = 0; i < dim; ++i)
        REQUIRE(std::fabs(acc[i] - (before[i] + double(w) * dec[i])) <=
                1e-5 * (std::fabs(before[i]) + std::fabs(dec[i])) + 1e-6);
    }
  }
}

TEST_CASE("reference turbo: a zero vector is all zero bytes and decodes to zeros", "[reference][turbo]") {
  const float* levels = kvq::lloyd_max_levels(3, 64);
  const auto t = thresholds_of<3>(levels);
  std::vector<float> y(64, 0.0f), dec(64, 1.0f);
  std::vector<std::byte> row(kvq::reference::turbo_row_bytes(3, 64), std::byte{0x77});
  kvq::reference::turbo_encode_rotated<3>(y.data(), 0.0, 64, levels, t.data(), row.data());
  for (auto b : row) REQUIRE(b == std::byte{0});
  kvq::reference::turbo_decode_rotated<3>(row.data(), 64, levels, dec.data());
  for (float v : dec) REQUIRE(v == 0.0f);
}

TEST_CASE("reference turbo: hostile bytes decode without undefined behaviour", "[reference][turbo]") {
  // Every fp16 scale pattern, including NaN/Inf, over arbitrary index bytes.
  const float* levels = kvq::lloyd_max_levels(4, 64);  // any 16 levels will do
  std::vector<std::byte> row(kvq::reference::turbo_row_bytes(4, 32), std::byte{0xE3});
  std::vector<float> y(32), q(32, 1.0f), acc(32, 0.0f);
  int nonfinite = 0;
  for (unsigned h = 0; h < 65536; h += 97) {
    kvq::bits::store_u16(row.data(), static_cast<std::uint16_t>(h));
    kvq::reference::turbo_decode_rotated<4>(row.data(), 32, levels, y.data());
    (void)kvq::reference::turbo_dot_rotated<4>(q.data(), row.data(), 32, levels);
    nonfinite += !std::isfinite(y[0]);
  }
  CHECK(nonfinite > 0);  // the Inf/NaN scales came through as non-finite, not as a crash
}
