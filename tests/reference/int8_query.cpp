// The int8-query reference (kvq/reference/int8_query.hpp) against independent
// double-precision computations: the rounding rule, the non-finite rule, the
// score formula and its error bound against the exact dot product.
#include "kvq_test.hpp"
#include "support/random_vector.hpp"

#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/int8_query.hpp>
#include <kvq/reference/turbo.hpp>
#include <kvq/reference/uniform.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using kvq::reference::quantize_query_block;

TEST_CASE("reference int8 query: codes are the nearest integers to q / d, d = max|q| / 127", "[reference][int8]") {
  kvq::Rng rng(3);
  for (int rep = 0; rep < 200; ++rep) {
    std::vector<float> q = kvq::test::random_vector(rng, 32, rep % 2 ? 1e-3f : 30.0f);
    q[rep % 32] *= 10.0f;
    const auto b = quantize_query_block(q.data());
    double amax = 0.0, sum = 0.0;
    for (float x : q) {
      amax = std::max(amax, std::fabs(double(x)));
      sum += x;
    }
    REQUIRE(b.d == static_cast<float>(amax) / 127.0f);
    REQUIRE(std::fabs(b.sum - sum) <= 1e-5 * 32 * amax);
    for (std::size_t j = 0; j < 32; ++j) {
      REQUIRE(std::abs(int(b.c[j])) <= 127);
      REQUIRE(std::fabs(double(q[j]) - double(b.d) * b.c[j]) <= 0.5 * b.d * (1 + 1e-6));
    }
  }
  // Ties go to the even integer: 2.5 steps -> 2, 3.5 -> 4.
  std::vector<float> q(32, 0.0f);
  q[0] = 127.0f;
  q[1] = 2.5f;
  q[2] = -3.5f;
  const auto b = quantize_query_block(q.data());
  REQUIRE(b.d == 1.0f);
  CHECK(int(b.c[0]) == 127);
  CHECK(int(b.c[1]) == 2);
  CHECK(int(b.c[2]) == -4);
}

TEST_CASE("reference int8 query: zero and non-finite blocks", "[reference][int8]") {
  std::vector<float> q(32, 0.0f);
  auto b = quantize_query_block(q.data());
  CHECK(b.d == 0.0f);
  CHECK(b.sum == 0.0f);
  for (auto c : b.c) CHECK(int(c) == 0);
  q[7] = std::numeric_limits<float>::infinity();
  b = quantize_query_block(q.data());
  CHECK(std::isnan(b.d));
  for (auto c : b.c) CHECK(int(c) == 0);
  q[7] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(quantize_query_block(q.data()).d));
}

TEMPLATE_TEST_CASE("reference int8 query: scores follow the formula and stay within the bound of q . x",
                   "[reference][int8]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  using Block = typename TestType::block_type;
  const std::size_t d = 128;
  const TestType codec(d);
  kvq::Rng rng(9);
  std::vector<std::byte> row(codec.bytes_per_tile());
  for (int rep = 0; rep < 100; ++rep) {
    std::vector<float> x = kvq::test::random_vector(rng, d, 2.0f), q = kvq::test::random_vector(rng, d);
    for (auto& v : x) v += 1.5f;  // an offset, so the minimum term matters
    codec.encode_tile(x.data(), row.data());
    std::vector<kvq::reference::Int8QueryBlock> qb(d / 32);
    for (std::size_t b = 0; b < qb.size(); ++b) qb[b] = quantize_query_block(q.data() + b * 32);
    // The formula, in double, from the codes.
    double want = 0.0, exact = 0.0;
    std::vector<float> xd(d);
    kvq::reference::decode_row<Block>(row.data(), d, xd.data());
    for (std::size_t j = 0; j < d; ++j) exact += double(q[j]) * xd[j];
    int c[32];
    float kd, km;
    for (std::size_t b = 0; b < qb.size(); ++b) {
      Block::unpack(row.data() + b * Block::bytes, c, kd, km);
      for (std::size_t j = 0; j < 32; ++j) want += double(kd) * qb[b].d * c[j] * qb[b].c[j];
      want += double(km) * qb[b].sum;
    }
    const double got = kvq::reference::dot_row_int8<Block>(qb.data(), row.data(), d);
    REQUIRE(std::fabs(got - want) <= 1e-5 * (std::fabs(want) + 1.0));
    const double bound = kvq::reference::int8_score_bound<Block>(qb.data(), row.data(), d);
    REQUIRE(std::fabs(got - exact) <= bound + 1e-5 * (std::fabs(exact) + 1.0));
    // The bound is not vacuous: it is a small fraction of sum |q_j x_j|.
    double l1 = 0.0;
    for (std::size_t j = 0; j < d; ++j) l1 += std::fabs(double(q[j]) * xd[j]);
    CHECK(bound < 0.05 * l1 + 1.0);
  }
}

TEMPLATE_TEST_CASE_SIG("reference int8 query: the turbo codebook's int8 levels fit int8 within the stated error",
                       "[reference][int8][turbo]", ((unsigned B), B), 2, 3, 4) {
  for (std::size_t d : {64u, 96u, 128u, 256u}) {
    const kvq::Turbo<B> codec(d);
    const auto& L = codec.levels();
    const auto& cb = codec.int8_codebook();
    double amax = 0.0;
    for (float l : L) amax = std::max(amax, std::fabs(double(l)));
    INFO("turbo" << B << " head_dim " << d << " step " << cb.step << " error " << cb.error);
    REQUIRE(cb.step >= static_cast<float>(amax / 127.0));
    double err = 0.0, err_finest = 0.0;
    const double finest = static_cast<float>(amax / 127.0);
    for (std::size_t k = 0; k < L.size(); ++k) {
      REQUIRE(std::abs(int(cb.levels[k])) <= 127);
      REQUIRE(double(cb.levels[k]) == std::nearbyint(double(L[k]) / cb.step));
      err = std::max(err, std::fabs(double(L[k]) - double(cb.step) * cb.levels[k]));
      err_finest = std::max(err_finest, std::fabs(double(L[k]) - finest * std::nearbyint(L[k] / finest)));
    }
    for (std::size_t k = L.size(); k < 16; ++k) REQUIRE(cb.levels[k] == 0);
    REQUIRE(double(cb.error) == Approx(err).margin(1e-12));
    REQUIRE(err <= err_finest * (1 + 1e-6));   // never worse than max|L| / 127
    REQUIRE(err <= amax / 254 * (1 + 1e-6));
    // Symmetric codebooks stay symmetric.
    for (std::size_t k = 0; k < L.size(); ++k) REQUIRE(cb.levels[k] == -cb.levels[L.size() - 1 - k]);
  }
}

TEMPLATE_TEST_CASE_SIG("reference int8 query: turbo scores follow the formula and stay within the bound",
                       "[reference][int8][turbo]", ((unsigned B), B), 2, 3, 4) {
  const std::size_t d = 128;
  const kvq::Turbo<B> codec(d);
  const auto& cb = codec.int8_codebook();
  kvq::Rng rng(10 + B);
  std::vector<std::byte> row(codec.bytes_per_tile());
  for (int rep = 0; rep < 100; ++rep) {
    std::vector<float> x = kvq::test::random_vector(rng, d, 0.1f + rep), q = kvq::test::random_vector(rng, d);
    q[rep % d] *= 8.0f;  // an outlier coordinate
    codec.encode_tile(x.data(), row.data());
    std::vector<kvq::reference::Int8QueryBlock> qb(d / 32);
    for (std::size_t b = 0; b < qb.size(); ++b) qb[b] = quantize_query_block(q.data() + b * 32);
    // The formula in double, from the indices.
    std::vector<std::uint8_t> idx(d);
    for (std::size_t g = 0; g < d / 16; ++g)
      kvq::reference::turbo_unpack_group<B>(row.data() + 2 + g * kvq::reference::turbo_group_bytes(B), &idx[16 * g]);
    const double alpha = kvq::half_bits_to_float(kvq::bits::load_u16(row.data()));
    double want = 0.0, exact = 0.0, l1 = 0.0;
    for (std::size_t j = 0; j < d; ++j) {
      want += double(qb[j / 32].d) * qb[j / 32].c[j % 32] * cb.levels[idx[j]];
      exact += double(q[j]) * codec.levels()[idx[j]];
      l1 += std::fabs(double(q[j]) * codec.levels()[idx[j]]);
    }
    want *= alpha * cb.step;
    exact *= alpha;
    l1 *= alpha;
    const double got = kvq::reference::turbo_dot_row_int8<B>(qb.data(), row.data(), d, cb.levels, cb.step);
    REQUIRE(std::fabs(got - want) <= 1e-5 * l1);
    const double bound = kvq::reference::turbo_int8_score_bound<B>(qb.data(), row.data(), d, codec.levels().data(), cb);
    REQUIRE(std::fabs(got - exact) <= bound + 1e-5 * l1);
    REQUIRE(std::fabs(kvq::reference::turbo_dot_rotated<B>(q.data(), row.data(), d, codec.levels().data()) - exact) <=
            1e-5 * l1);
    CHECK(bound < 0.05 * l1);  // not vacuous
  }
}
