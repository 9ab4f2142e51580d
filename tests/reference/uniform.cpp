// The reference dot/accumulate of the uniform formats against an independent
// double-precision computation on the decoded values.
#include "kvq_test.hpp"

#include <kvq/codec/uniform.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/uniform.hpp>

#include <cmath>
#include <vector>

TEMPLATE_TEST_CASE("reference uniform: dot and accumulate equal the decoded row in double",
                   "[reference][uniform]", kvq::reference::Q8_0Block, kvq::reference::Q4_0Block,
                   kvq::reference::Q4_1Block, kvq::reference::Q3_1Block, kvq::reference::Q2_1Block) {
  kvq::Rng rng(3);
  for (std::size_t dim : {32u, 96u, 128u}) {
    std::vector<float> x(dim), q(dim), y(dim), acc(dim, 0.25f);
    std::vector<std::byte> row(dim / 32 * TestType::bytes);
    for (int trial = 0; trial < 20; ++trial) {
      for (auto& v : x) v = static_cast<float>(rng.normal() * 2 + 0.5);
      for (auto& v : q) v = static_cast<float>(rng.normal());
      kvq::reference::encode_row<TestType>(x.data(), dim, row.data());
      kvq::reference::decode_row<TestType>(row.data(), dim, y.data());
      double exact = 0, mag = 0;
      for (std::size_t i = 0; i < dim; ++i) {
        exact += double(q[i]) * y[i];
        mag += std::fabs(double(q[i]) * y[i]);
      }
      const float dot = kvq::reference::dot_row<TestType>(q.data(), row.data(), dim);
      REQUIRE(std::fabs(dot - exact) <= 1e-5 * mag + 1e-6);

      const float w = static_cast<float>(rng.uniform());
      std::vector<float> before = acc;
      kvq::reference::accumulate_row<TestType>(acc.data(), w, row.data(), dim);
      for (std::size_t i = 0; i < dim; ++i)
        REQUIRE(std::fabs(acc[i] - (before[i] + double(w) * y[i])) <= 1e-5 * (std::fabs(before[i]) + std::fabs(y[i])) + 1e-6);
    }
  }
}

TEST_CASE("reference uniform: hostile bytes decode without undefined behaviour", "[reference][uniform]") {
  // Every fp16 scale pattern, including NaN/Inf, in a q4_1 block: decode must not trap.
  std::vector<std::byte> blk(kvq::reference::Q4_1Block::bytes, std::byte{0x37});
  std::vector<float> y(32);
  int nonfinite = 0;
  for (unsigned h = 0; h < 65536; h += 97) {
    kvq::bits::store_u16(blk.data(), static_cast<std::uint16_t>(h));
    kvq::reference::decode_row<kvq::reference::Q4_1Block>(blk.data(), 32, y.data());
    nonfinite += !std::isfinite(y[0]);
  }
  CHECK(nonfinite > 0);  // Inf/NaN scales do come out as non-finite values, for callers to check
}
