// int8-query scores (kvq/kernels/int8_query.hpp, int8_query-inl.h,
// int8_dot-inl.h) on every SIMD target this machine runs: the quantized
// queries equal the scalar reference's codes bit for bit, the scores equal the
// int8 reference up to f32 summation order and the f32 scores within the
// accuracy contract of kvq/reference/int8_query.hpp, over odd row counts, GQA
// groups 1..11, odd block counts, unaligned pointers and hostile bytes.
#include "kvq_test.hpp"
#include "support/int8_queries.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <kvq/codec/uniform.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/int8_query.hpp>
#include <kvq/reference/uniform.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

using kvq::kernels::Int8Queries;
using kvq::reference::Int8QueryBlock;
using kvq::reference::kBlockValues;

// Section s of block b of query i in the Int8Queries layout.
const std::byte* section(const Int8Queries& qq, std::size_t i, std::size_t s, std::size_t b) {
  return qq.data() + i * qq.stride() + s * qq.padded_blocks() * Int8Queries::kSectionBytes +
         b * Int8Queries::kSectionBytes;
}

using kvq::test::int8_test_queries;
using kvq::test::reference_blocks;

TEST_CASE("kernels int8: quantize_queries equals the reference quantization on every target", "[kernels][int8]") {
  kvq::Rng rng(11);
  for (std::size_t hd : {32u, 96u, 128u}) {
    const std::size_t n = 6, stride = hd + 3;
    const std::vector<float> q = int8_test_queries(rng, n, stride, hd, true);
    const auto ran = kvq::test::for_each_target([&] {
      Int8Queries qq;
      kvq::kernels::quantize_queries(q.data() + 1, n, stride, hd, qq);
      REQUIRE(qq.n_q() == n);
      for (std::size_t i = 0; i < n; ++i) {
        const auto ref = reference_blocks(q.data() + 1 + i * stride, hd);
        for (std::size_t b = 0; b < qq.padded_blocks(); ++b) {
          INFO("head_dim " << hd << " query " << i << " block " << b << " target " << kvq::kernels::target_name());
          const Int8QueryBlock want = b < ref.size() ? ref[b] : Int8QueryBlock{};
          std::int8_t codes[32];
          std::int32_t b128[8], b8[8];
          float step[8], sum[8];
          std::memcpy(codes, section(qq, i, 0, b), 32);
          std::memcpy(b128, section(qq, i, 1, b), 32);
          std::memcpy(b8, section(qq, i, 2, b), 32);
          std::memcpy(step, section(qq, i, 3, b), 32);
          std::memcpy(sum, section(qq, i, 4, b), 32);
          for (std::size_t j = 0; j < 32; ++j) REQUIRE(int(codes[j]) == int(want.c[j]));
          for (std::size_t l = 0; l < 8; ++l) {
            const int s = want.c[4 * l] + want.c[4 * l + 1] + want.c[4 * l + 2] + want.c[4 * l + 3];
            REQUIRE(b128[l] == -128 * s);
            REQUIRE(b8[l] == -8 * s);
            if (std::isnan(want.d))
              REQUIRE(std::isnan(step[l]));
            else
              REQUIRE(step[l] == want.d);
            if (l > 0) REQUIRE(sum[l] == 0.0f);
          }
          if (std::isfinite(want.sum))
            REQUIRE(std::fabs(sum[0] - want.sum) <= 1e-6f * 32 * 20 * 5);
          else
            REQUIRE(!std::isfinite(sum[0]));
        }
      }
    });
    kvq::test::require_targets_exercised(ran);
  }
}

// Encoded rows of n tokens, `offset` bytes past a 64-byte boundary.
template <class Codec>
std::vector<std::byte> encoded_rows(const Codec& c, std::size_t n, std::size_t offset, kvq::Rng& rng) {
  std::vector<std::byte> bytes(n * c.bytes_per_tile() + offset);
  std::vector<float> x(c.head_dim());
  for (std::size_t t = 0; t < n; ++t) {
    const double scale = 0.1 + 3.0 * rng.uniform(), shift = rng.normal();
    for (auto& v : x) v = static_cast<float>(shift + scale * rng.normal());
    c.encode_tile(x.data(), bytes.data() + offset + t * c.bytes_per_tile());
  }
  return bytes;
}

// |terms| of the int8 score of one row: the scale of its f32 rounding.
template <class Block>
double int8_magnitude(const Int8QueryBlock* qb, const std::byte* row, std::size_t hd) {
  int c[kBlockValues];
  float d, m;
  double mag = 0.0;
  for (std::size_t b = 0; b < hd / kBlockValues; ++b) {
    Block::unpack(row + b * Block::bytes, c, d, m);
    for (std::size_t j = 0; j < kBlockValues; ++j) mag += std::fabs(double(d) * qb[b].d * c[j] * qb[b].c[j]);
    mag += std::fabs(double(m) * qb[b].sum);
  }
  return mag;
}

template <class Codec>
void check_scores_shape(const Codec& c, std::size_t n_q, std::size_t n, std::size_t misalign, kvq::Rng& rng) {
  using Block = typename Codec::block_type;
  const std::size_t hd = c.head_dim(), tile = c.bytes_per_tile();
  const std::vector<std::byte> bytes = encoded_rows(c, n, misalign, rng);
  const std::byte* rows = bytes.data() + misalign;
  const std::size_t q_stride = hd + 5, out_stride = n + 3;
  const std::vector<float> qbuf = int8_test_queries(rng, n_q, q_stride, hd, false);
  const float* q = qbuf.data() + misalign;
  Int8Queries qq;
  kvq::kernels::quantize_queries(q, n_q, q_stride, hd, qq);
  const float sentinel = -12345.0f;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores(c, qq, rows, n, out, out_stride);
  INFO(std::string(Codec::name) << " head_dim " << hd << " n_q " << n_q << " n " << n << " misalign " << misalign
                                << " target " << kvq::kernels::target_name());
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    const float* qv = q + qi * q_stride;
    const auto qb = reference_blocks(qv, hd);
    for (std::size_t t = 0; t < n; ++t) {
      const std::byte* row = rows + t * tile;
      const float got = out[qi * out_stride + t];
      const double want = kvq::reference::dot_row_int8<Block>(qb.data(), row, hd);
      const double mag = int8_magnitude<Block>(qb.data(), row, hd);
      INFO("row " << t << " query " << qi << ": kernel " << got << " int8 reference " << want);
      REQUIRE(std::fabs(got - want) <= 2e-6 * mag + 1e-30);
      // The contract against the f32 scores.
      const double exact = kvq::reference::dot_row<Block>(qv, row, hd);
      double f32_mag = 0.0;
      std::vector<float> x(hd);
      kvq::reference::decode_row<Block>(row, hd, x.data());
      for (std::size_t j = 0; j < hd; ++j) f32_mag += std::fabs(double(qv[j]) * x[j]);
      const double bound = kvq::reference::int8_score_bound<Block>(qb.data(), row, hd);
      INFO("f32 score " << exact << " bound " << bound);
      REQUIRE(std::fabs(got - exact) <= bound * (1 + 1e-6) + 4e-6 * (mag + f32_mag) + 1e-30);
    }
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);
  }
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(outbuf[i] == sentinel);
}

}  // namespace

TEMPLATE_TEST_CASE("kernels int8: scores equal the int8 reference and keep the f32 contract on every target",
                   "[kernels][int8]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  const auto ran = kvq::test::for_each_target([] {
    kvq::Rng rng(20261201);
    for (std::size_t hd : {32u, 64u, 96u, 128u, 256u}) {
      const TestType c(hd);
      // 16-row token-lane chunks (AVX-512, groups of 2+) with and without a
      // tail, and a group over 8 queries (two query chunks).
      for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u, 11u})
        for (std::size_t n : {1u, 3u, 7u, 8u, 12u, 33u, 48u})
          check_scores_shape(c, n_q, n, (n_q + n + hd / 32) % 4, rng);
    }
  });
  kvq::test::require_targets_exercised(ran);
}

#if HWY_ARCH_ARM_A64 && defined(__linux__)
// NEON picks sdot at run time (int8_dot-inl.h): scripts/arm64.sh runs this on
// a CPU with the dot product (neoverse-n1, max) and one without (cortex-a72),
// so each path is both chosen where it must be and checked against the oracle.
TEST_CASE("kernels int8: NEON runs sdot exactly where the CPU has it, and it equals the int8 reference",
          "[kernels][int8][arm]") {
  kvq::test::require_expected_cpu_features();
  const bool dotprod = kvq::test::arm_cpu_features().count("asimddp") == 1;
  const std::string path = kvq::kernels::int8_dot_path();
  INFO("int8 dot path " << path << (dotprod ? " on a CPU with" : " on a CPU without") << " the dot product");
  REQUIRE(path == (dotprod ? "sdot" : "neon-widening"));
  kvq::Rng rng(14);
  for (std::size_t hd : {32u, 96u, 128u})
    for (std::size_t n_q : {1u, 3u, 8u})
      for (std::size_t n : {1u, 7u, 33u}) {
        const std::size_t misalign = (hd / 32 + n_q + n) % 4;
        check_scores_shape(kvq::Q8_0(hd), n_q, n, misalign, rng);
        check_scores_shape(kvq::Q4_0(hd), n_q, n, misalign, rng);
        check_scores_shape(kvq::Q4_1(hd), n_q, n, misalign, rng);
        check_scores_shape(kvq::Q3_1(hd), n_q, n, misalign, rng);
        check_scores_shape(kvq::Q2_1(hd), n_q, n, misalign, rng);
      }
}
#endif

TEMPLATE_TEST_CASE("kernels int8: hostile rows and queries never crash; non-finite where the reference is",
                   "[kernels][int8]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  // Random bytes: every code (q8_0's -128 included) in every position, with
  // fp16 scales from subnormal to Inf and NaN.
  using Block = typename TestType::block_type;
  const std::size_t hd = 96, n = 37;  // 3 blocks: the odd tail of the 2-block targets
  const TestType c(hd);
  kvq::Rng rng(5);
  std::vector<std::byte> rows(n * c.bytes_per_tile());
  for (auto& b : rows) b = static_cast<std::byte>(rng.next_u64());
  const std::uint16_t scales[] = {0x0001, 0x03FF, 0x3C00, 0x7BFF, 0xBC00, 0x7C00, 0xFE00, 0x1234};
  for (std::size_t i = 0; i < n * hd / kBlockValues; ++i) {
    std::byte* blk = rows.data() + i * Block::bytes;
    kvq::bits::store_u16(blk, scales[i % 8]);
    if (Block::bytes != 34 && Block::bytes != 18) kvq::bits::store_u16(blk + 2, scales[(i + 3) % 8]);
  }
  const std::size_t n_q = 5;
  const std::vector<float> q = int8_test_queries(rng, n_q, hd, hd, true);
  const auto ran = kvq::test::for_each_target([&] {
    Int8Queries qq;
    kvq::kernels::quantize_queries(q.data(), n_q, hd, hd, qq);
    std::vector<float> out(n_q * n);
    kvq::kernels::scores(c, qq, rows.data(), n, out.data(), n);
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      const auto qb = reference_blocks(q.data() + qi * hd, hd);
      for (std::size_t t = 0; t < n; ++t) {
        const std::byte* row = rows.data() + t * c.bytes_per_tile();
        const float want = kvq::reference::dot_row_int8<Block>(qb.data(), row, hd);
        const float got = out[qi * n + t];
        INFO(TestType::name << " query " << qi << " row " << t << " target " << kvq::kernels::target_name()
                            << ": kernel " << got << " reference " << want);
        if (std::isfinite(want)) {
          REQUIRE(std::fabs(double(got) - want) <= 2e-6 * int8_magnitude<Block>(qb.data(), row, hd) + 1e-30);
        } else {
          REQUIRE(!std::isfinite(got));
          if (std::isnan(want)) REQUIRE(std::isnan(got));
        }
      }
    }
  });
  kvq::test::require_targets_exercised(ran);
}

TEST_CASE("kernels int8: a NaN or Inf query block makes the scores NaN; a zero query scores 0", "[kernels][int8]") {
  const kvq::Q4_1 c(64);
  kvq::Rng rng(8);
  const std::vector<std::byte> rows = encoded_rows(c, 9, 0, rng);
  std::vector<float> q(3 * 64, 0.0f);
  q[64 + 40] = std::numeric_limits<float>::infinity();
  q[128 + 3] = std::numeric_limits<float>::quiet_NaN();
  kvq::test::for_each_target([&] {
    Int8Queries qq;
    kvq::kernels::quantize_queries(q.data(), 3, 64, 64, qq);
    std::vector<float> out(3 * 9);
    kvq::kernels::scores(c, qq, rows.data(), 9, out.data(), 9);
    for (std::size_t t = 0; t < 9; ++t) {
      CHECK(out[t] == 0.0f);
      CHECK(std::isnan(out[9 + t]));
      CHECK(std::isnan(out[18 + t]));
    }
  });
}

TEST_CASE("kernels int8: shape errors are refused", "[kernels][int8]") {
  const kvq::Q8_0 c(64);
  std::vector<float> q(2 * 64, 1.0f), out(8);
  std::vector<std::byte> rows(4 * c.bytes_per_tile());
  Int8Queries qq;
  CHECK_THROWS_AS(kvq::kernels::quantize_queries(q.data(), 1, 64, 48, qq), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::quantize_queries(q.data(), 2, 32, 64, qq), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::quantize_queries(nullptr, 1, 64, 64, qq), kvq::Error);
  kvq::kernels::quantize_queries(q.data(), 2, 64, 64, qq);
  CHECK_THROWS_AS(kvq::kernels::scores(kvq::Q8_0(128), qq, rows.data(), 2, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::scores(c, qq, rows.data(), 4, out.data(), 3), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::scores(c, qq, nullptr, 4, out.data(), 4), kvq::Error);
  CHECK_NOTHROW(kvq::kernels::scores(c, qq, rows.data(), 4, out.data(), 4));
}
