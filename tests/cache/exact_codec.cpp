#include "kvq_test.hpp"

#include <kvq/cache/exact_codec.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <limits>
#include <vector>

TEST_CASE("exact_codec: f32 is lossless, f16 rounds like to_half, both score and accumulate", "[cache][exact_codec]") {
  kvq::Rng rng(1);
  const std::size_t d = 48;
  std::vector<float> x(d), q(d), y(d), acc(d, 0.0f), out(d);
  for (auto& v : x) v = static_cast<float>(100 * rng.normal());
  for (auto& v : q) v = static_cast<float>(rng.normal());
  const kvq::ExactF32 f32(d);
  const kvq::ExactF16 f16(d);
  CHECK(f32.bytes_per_tile() == 4 * d);
  CHECK(f16.bytes_per_tile() == 2 * d);
  std::vector<std::byte> b32(f32.bytes_per_tile()), b16(f16.bytes_per_tile());
  f32.encode_tile(x.data(), b32.data());
  f32.decode_tile(b32.data(), y.data());
  CHECK(y == x);
  f16.encode_tile(x.data(), b16.data());
  f16.decode_tile(b16.data(), y.data());
  for (std::size_t i = 0; i < d; ++i) CHECK(y[i] == kvq::round_to_half(x[i]));
  float s = 0, expect = 0;
  for (std::size_t i = 0; i < d; ++i) expect += q[i] * y[i];
  f16.scores(q.data(), b16.data(), &s);
  CHECK(s == Approx(expect).epsilon(1e-5));
  const float w = 0.25f;
  f16.accumulate(acc.data(), &w, b16.data());
  f16.finish_output(acc.data(), out.data());
  for (std::size_t i = 0; i < d; ++i) CHECK(out[i] == 0.25f * y[i]);

  x[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(f32.encode_tile(x.data(), b32.data()), kvq::Error);
  x[3] = 70000.0f;
  try {
    f16.encode_tile(x.data(), b16.data());
    FAIL("f16 accepted a value above 65504");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::out_of_range);
  }
}
