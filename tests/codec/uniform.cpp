// Uniform block codecs: golden bytes worked out by hand from ggml's rules,
// round-trip error bounds, re-encoding stability, refusal of bad input.
#include "kvq_test.hpp"
#include "support/tile_bytes.hpp"

#include <kvq/codec/uniform.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {
using kvq::test::encode_bytes;
std::vector<float> ramp(int from) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j + from);
  return x;
}
std::vector<float> random_row(kvq::Rng& rng, std::size_t n, double scale, double offset = 0) {
  std::vector<float> x(n);
  for (auto& v : x) v = static_cast<float>(offset + scale * rng.normal());
  return x;
}
}  // namespace

TEST_CASE("q4_0: golden block x_j = j - 16", "[codec][uniform][q4_0]") {
  // max |x| = 16 at x_0 = -16, so d = -16 / -8 = 2 (fp16 0x4000), 1/d = 0.5 and
  // n_j = min(15, trunc((j - 16) / 2 + 8.5)) = min(15, floor((j + 1) / 2)).
  // Byte j holds n_j | n_{j+16} << 4.
  const std::vector<std::uint8_t> expect = {0x00, 0x40, 0x80, 0x91, 0x91, 0xA2, 0xA2, 0xB3, 0xB3, 0xC4,
                                            0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7, 0xF8};
  CHECK(encode_bytes(kvq::Q4_0(32), ramp(-16)) == expect);
}

TEST_CASE("q4_1: golden block x_j = j", "[codec][uniform][q4_1]") {
  // min 0, max 31: d = 31/15 = 2.0667 -> fp16 0x4022 (2.06640625), m = 0 (0x0000),
  // c_j = trunc(j * 15/31 + 0.5) = 0,0,1,1,2,2,3,3,4,4,5,5,6,6,7,7,8,8,9,9,...,15,15.
  const std::vector<std::uint8_t> expect = {0x22, 0x40, 0x00, 0x00, 0x80, 0x80, 0x91, 0x91, 0xA2, 0xA2,
                                            0xB3, 0xB3, 0xC4, 0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7};
  CHECK(encode_bytes(kvq::Q4_1(32), ramp(0)) == expect);
}

TEST_CASE("q8_0: golden block x_j = j - 16", "[codec][uniform][q8_0]") {
  // amax 16: d = 16/127 = 0.125984 -> fp16 0x3008 (0.1259765625); c_j = roundf(x_j * 127/16),
  // rounding half away from zero: -16 -> -127, -8 -> -63.5 -> -64, 8 -> 63.5 -> 64.
  auto got = encode_bytes(kvq::Q8_0(32), ramp(-16));
  REQUIRE(got.size() == 34);
  CHECK(got[0] == 0x08);
  CHECK(got[1] == 0x30);
  for (int j = 0; j < 32; ++j) {
    const double exact = (j - 16) * 127.0 / 16.0;
    const int c = static_cast<int>(exact < 0 ? -std::floor(-exact + 0.5) : std::floor(exact + 0.5));
    REQUIRE(static_cast<std::int8_t>(got[2 + j]) == c);
  }
  CHECK(static_cast<std::int8_t>(got[2 + 8]) == -64);
  CHECK(static_cast<std::int8_t>(got[2 + 24]) == 64);
}

TEST_CASE("q2_1 and q3_1: golden blocks x_j = j", "[codec][uniform][q2_1][q3_1]") {
  // q2_1: d = 31/3 = 10.33 -> fp16 0x492B (10.3359375), c_j = trunc(j * 3/31 + 0.5):
  // j 0..5 -> 0, 6..15 -> 1, 16..25 -> 2, 26..31 -> 3. Byte j = c_j | c_{j+8}<<2 | c_{j+16}<<4 | c_{j+24}<<6:
  // j=0: 0 | 1<<2 | 2<<4 | 2<<6 = 0xA4; j=2: c_26 = 3 gives 0xE4; j=6: c_6 = 1 gives 0xE5.
  const std::vector<std::uint8_t> q2 = {0x2B, 0x49, 0x00, 0x00, 0xA4, 0xA4, 0xE4, 0xE4, 0xE4, 0xE4, 0xE5, 0xE5};
  CHECK(encode_bytes(kvq::Q2_1(32), ramp(0)) == q2);
  // q3_1: d = 31/7 -> fp16 0x446E (4.4296875); c_j = trunc(j * 7/31 + 0.5):
  // 0,0,0, 1 x4 (3..6), 2 x5 (7..11), 3 x4 (12..15), 4 x5 (16..20), 5 x4 (21..24), 6 x5 (25..29), 7 x2.
  std::vector<int> c(32);
  for (int j = 0; j < 32; ++j) c[j] = static_cast<int>(j * 7.0 / 31.0 + 0.5);
  std::vector<std::uint8_t> q3 = {0x6E, 0x44, 0x00, 0x00};
  for (int j = 0; j < 8; ++j)
    q3.push_back(static_cast<std::uint8_t>((c[j] & 3) | (c[j + 8] & 3) << 2 | (c[j + 16] & 3) << 4 | (c[j + 24] & 3) << 6));
  std::uint32_t high = 0;
  for (int j = 0; j < 32; ++j) high |= static_cast<std::uint32_t>(c[j] >> 2) << j;
  for (int i = 0; i < 4; ++i) q3.push_back(static_cast<std::uint8_t>(high >> (8 * i)));
  CHECK(high == 0xFFFF0000u);  // codes 4..7 are exactly j >= 16
  CHECK(encode_bytes(kvq::Q3_1(32), ramp(0)) == q3);
}

TEMPLATE_TEST_CASE("uniform: round trip within half a step plus fp16 metadata rounding",
                   "[codec][uniform]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  kvq::Rng rng(11);
  for (std::size_t dim : {32u, 64u, 128u, 256u}) {
    const TestType codec(dim);
    CHECK(codec.bytes_per_tile() == dim / 32 * TestType::block_type::bytes);
    for (int trial = 0; trial < 50; ++trial) {
      const auto x = random_row(rng, dim, 0.1 + trial, trial % 3 ? 0.0 : 5.0);
      std::vector<std::byte> enc(codec.bytes_per_tile());
      std::vector<float> y(dim);
      codec.encode_tile(x.data(), enc.data());
      codec.decode_tile(enc.data(), y.data());
      for (std::size_t b = 0; b < dim / 32; ++b) {
        float lo = x[b * 32], hi = x[b * 32], amax = 0;
        for (int j = 0; j < 32; ++j) {
          lo = std::min(lo, x[b * 32 + j]);
          hi = std::max(hi, x[b * 32 + j]);
          amax = std::max(amax, std::fabs(x[b * 32 + j]));
        }
        const float d16 = std::fabs(kvq::half_bits_to_float(kvq::bits::load_u16(enc.data() + b * TestType::block_type::bytes)));
        // The quantizer divides by the fp32 scale, decoding multiplies by its fp16
        // rounding: each code contributes |c| * |d - d16| <= 2^-11 * max|x|, and
        // the offset's own fp16 rounding adds 2^-11 * |min|.
        const double meta = 0x1.0p-11 * (amax + std::fabs(lo)) * 1.01;
        for (int j = 0; j < 32; ++j) {
          const double err = std::fabs(double(x[b * 32 + j]) - y[b * 32 + j]);
          double bound = 0.5 * d16 + meta;
          // q4_0 maps the extreme value to -8 and clamps the opposite extreme at +7:
          // values beyond +7.5 steps on the other side lose up to one full step.
          if constexpr (std::is_same_v<TestType, kvq::Q4_0>) bound = d16 + meta;
          REQUIRE(err <= bound + 1e-7);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("uniform: encode -> decode -> encode reproduces the bytes", "[codec][uniform]",
                   kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  kvq::Rng rng(5);
  const TestType codec(128);
  int unstable = 0;
  for (int trial = 0; trial < 500; ++trial) {
    const auto x = random_row(rng, 128, 1.0 + trial % 7, trial % 2 ? 3.0 : 0.0);
    std::vector<std::byte> e1(codec.bytes_per_tile()), e2(codec.bytes_per_tile());
    std::vector<float> y(128);
    codec.encode_tile(x.data(), e1.data());
    codec.decode_tile(e1.data(), y.data());
    codec.encode_tile(y.data(), e2.data());
    unstable += e1 != e2;
  }
  CHECK(unstable == 0);
}

TEMPLATE_TEST_CASE("uniform: bad input is refused before anything is written", "[codec][uniform]",
                   kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  CHECK_THROWS_MATCHES(TestType(48), kvq::Error,
                       Catch::Matchers::Predicate<kvq::Error>([](const kvq::Error& e) { return e.code() == kvq::Errc::shape_mismatch; }));
  CHECK_THROWS_AS(TestType(0), kvq::Error);
  const TestType codec(64);
  std::vector<std::byte> out(codec.bytes_per_tile(), std::byte{0x5A});
  const auto untouched = out;
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> x(64, 1.0f);
    x[63] = bad;
    try {
      codec.encode_tile(x.data(), out.data());
      FAIL("non-finite input accepted");
    } catch (const kvq::Error& e) {
      CHECK(e.code() == kvq::Errc::non_finite);
    }
    CHECK(out == untouched);
  }
  // A value whose block scale overflows fp16 (only in the last block) is refused whole.
  std::vector<float> huge(64, 1.0f);
  huge[40] = 3.0e37f;
  try {
    codec.encode_tile(huge.data(), out.data());
    FAIL("overflowing scale accepted");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::out_of_range);
  }
  CHECK(out == untouched);
}

TEMPLATE_TEST_CASE("uniform: all-zero and constant blocks", "[codec][uniform]", kvq::Q8_0, kvq::Q4_0,
                   kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  const TestType codec(32);
  std::vector<std::byte> enc(codec.bytes_per_tile());
  std::vector<float> y(32);
  for (float v : {0.0f, 2.5f, -7.0f}) {
    const std::vector<float> x(32, v);
    codec.encode_tile(x.data(), enc.data());
    codec.decode_tile(enc.data(), y.data());
    for (int j = 0; j < 32; ++j) REQUIRE(std::fabs(y[j] - v) <= 0x1.0p-10f * std::fabs(v));
  }
}
