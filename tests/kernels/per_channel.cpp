// The per-channel SIMD kernels (pc2/3/4 tiles) against the scalar reference,
// on every SIMD target this machine can run: tile lengths G = 32..256 (the
// bit-plane layouts change shape with G), head_dim 8..256, GQA groups of 1..8,
// runs of several tiles, unaligned pointers, every code in every position and
// hostile fp16 metadata. The int8 scores (kernels::scores_int8) the same way,
// against their reference and within its bound of the f32 scores.
//
#include "kvq_test.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/codec/per_channel.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/int8_query.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace {

// Tiles of keys with per-channel offsets and scales (what the format is for).
template <unsigned B>
std::vector<std::byte> encoded_tiles(const kvq::PerChannel<B>& c, std::size_t n_tiles, std::size_t misalign,
                                     kvq::Rng& rng) {
  const std::size_t d = c.head_dim(), g = c.tokens_per_tile();
  std::vector<float> shift(d), scale(d), x(g * d);
  for (std::size_t j = 0; j < d; ++j) {
    shift[j] = static_cast<float>(3.0 * rng.normal());
    scale[j] = static_cast<float>(0.1 + 2.0 * rng.uniform());
  }
  std::vector<std::byte> bytes(misalign + n_tiles * c.bytes_per_tile());
  for (std::size_t i = 0; i < n_tiles; ++i) {
    for (std::size_t t = 0; t < g; ++t)
      for (std::size_t j = 0; j < d; ++j) x[t * d + j] = shift[j] + scale[j] * static_cast<float>(rng.normal());
    c.encode_tile(x.data(), bytes.data() + misalign + i * c.bytes_per_tile());
  }
  return bytes;
}

// Tolerance of one score or output lane: float rounding of any summation
// order, relative to the sum of the magnitudes of the terms.
constexpr double kRel = 4e-6;

template <unsigned B>
void check_tiles(const kvq::PerChannel<B>& c, const std::byte* tiles, std::size_t n_tiles, std::size_t n_q,
                 std::size_t misalign, kvq::Rng& rng) {
  const std::size_t d = c.head_dim(), g = c.tokens_per_tile(), bt = c.bytes_per_tile(), n = n_tiles * g;
  INFO("pc" << B << "/g" << g << " head_dim " << d << " n_q " << n_q << " tiles " << n_tiles << " misalign "
            << misalign << " target " << kvq::kernels::target_name());
  std::vector<float> y(g * d);
  std::vector<std::vector<float>> decoded;
  for (std::size_t i = 0; i < n_tiles; ++i) {
    c.decode_tile(tiles + i * bt, y.data());
    decoded.push_back(y);
  }
  const float sentinel = -12345.0f;
  const std::size_t q_stride = d + 3, out_stride = n + 5;
  std::vector<float> qbuf = kvq::test::random_vector(rng, misalign + n_q * q_stride);
  const float* q = qbuf.data() + misalign;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel), want(g);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores(c, q, n_q, q_stride, tiles, n_tiles, out, out_stride);
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    const float* qv = q + qi * q_stride;
    for (std::size_t i = 0; i < n_tiles; ++i) {
      c.scores(qv, tiles + i * bt, want.data());
      for (std::size_t t = 0; t < g; ++t) {
        double mag = 0;
        for (std::size_t j = 0; j < d; ++j) mag += std::fabs(double(qv[j]) * decoded[i][t * d + j]);
        const float got = out[qi * out_stride + i * g + t];
        INFO("query " << qi << " tile " << i << " token " << t << ": kernel " << got << " reference " << want[t]);
        REQUIRE(std::fabs(double(got) - want[t]) <= kRel * mag + 1e-30);
      }
    }
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);
  }

  const std::size_t w_stride = n + 2, acc_stride = d + 1;
  std::vector<float> wbuf = kvq::test::random_vector(rng, misalign + n_q * w_stride);
  const float* w = wbuf.data() + misalign;
  std::vector<float> accbuf(misalign + n_q * acc_stride, sentinel), ref(n_q * d), mag(n_q * d);
  float* acc = accbuf.data() + misalign;
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t j = 0; j < d; ++j) {
      acc[qi * acc_stride + j] = ref[qi * d + j] = static_cast<float>(rng.normal());
      mag[qi * d + j] = std::fabs(ref[qi * d + j]);
    }
  kvq::kernels::accumulate(c, w, n_q, w_stride, tiles, n_tiles, acc, acc_stride);
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t i = 0; i < n_tiles; ++i) {
      const float* wi = w + qi * w_stride + i * g;
      c.accumulate(ref.data() + qi * d, wi, tiles + i * bt);
      for (std::size_t t = 0; t < g; ++t)
        for (std::size_t j = 0; j < d; ++j)
          mag[qi * d + j] += std::fabs(wi[t]) * (std::fabs(decoded[i][t * d + j]) + 1.0);  // + offset terms
    }
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    for (std::size_t j = 0; j < d; ++j) {
      INFO("accumulate query " << qi << " channel " << j);
      REQUIRE(std::fabs(double(acc[qi * acc_stride + j]) - ref[qi * d + j]) <= kRel * mag[qi * d + j] + 1e-30);
    }
    REQUIRE(acc[qi * acc_stride + d] == sentinel);
  }
}

template <unsigned B>
void check_all_pc_shapes() {
  kvq::Rng rng(31 + B);
  for (std::size_t g : {32u, 64u, 96u, 128u, 256u})
    for (std::size_t d : {8u, 64u, 128u, 256u}) {
      if (g == 256 && d == 256) continue;  // covered in parts; keeps the test quick
      const kvq::PerChannel<B> c(d, g);
      for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u}) {
        const std::size_t n_tiles = 1 + (n_q + g / 32) % 3, misalign = (n_q + d / 8) % 4;
        const std::vector<std::byte> tiles = encoded_tiles(c, n_tiles, misalign, rng);
        check_tiles(c, tiles.data() + misalign, n_tiles, n_q, misalign, rng);
      }
    }
}

}  // namespace

TEMPLATE_TEST_CASE_SIG("kernels per-channel: scores and accumulate equal the reference on every target",
                       "[kernels][per_channel]", ((unsigned B), B), 2, 3, 4) {
  const auto ran = kvq::test::for_each_target([] { check_all_pc_shapes<B>(); });
  kvq::test::require_targets_exercised(ran);
}

TEMPLATE_TEST_CASE_SIG("kernels per-channel: every code in every position, hostile metadata",
                       "[kernels][per_channel]", ((unsigned B), B), 2, 3, 4) {
  // Random code bytes reach every code in every token and channel (a wrong
  // bit plane or shift shows up here); the metadata bytes are set to finite
  // fp16 values, then one tile gets a NaN scale base.
  for (std::size_t g : {32u, 96u}) {
    const kvq::PerChannel<B> c(64, g);
    const std::size_t d = 64, bt = c.bytes_per_tile(), n_tiles = 2;
    kvq::Rng rng(77);
    std::vector<std::byte> tiles(n_tiles * bt);
    for (auto& b : tiles) b = static_cast<std::byte>(rng.next_u64());
    for (std::size_t i = 0; i < n_tiles; ++i) {
      std::byte* h = tiles.data() + i * bt + bt - 8;
      kvq::bits::store_u16(h, 0x1C00);      // Sd
      kvq::bits::store_u16(h + 2, 0x2000);  // Smin
      kvq::bits::store_u16(h + 4, 0x2400);  // Md
      kvq::bits::store_u16(h + 6, 0xC000);  // Mmin
    }
    const std::vector<float> q = kvq::test::random_vector(rng, d);
    const auto ran = kvq::test::for_each_target([&] { check_tiles(c, tiles.data(), n_tiles, 1, 0, rng); });
    kvq::test::require_targets_exercised(ran);

    kvq::bits::store_u16(tiles.data() + 2 * bt - 8, 0x7E00);  // tile 1: NaN Sd
    kvq::test::for_each_target([&] {
      std::vector<float> out(n_tiles * g);
      kvq::kernels::scores(c, q.data(), 1, d, tiles.data(), n_tiles, out.data(), n_tiles * g);
      for (std::size_t t = 0; t < g; ++t) REQUIRE(std::isfinite(out[t]));       // tile 0 unaffected
      for (std::size_t t = g; t < 2 * g; ++t) REQUIRE(std::isnan(out[t]));      // tile 1 poisoned
    });
  }
}

namespace {

// int8 scores of n_tiles tiles for n_q queries (strides, sentinels) against
// reference::per_channel_scores_int8 (up to summation order) and the f32
// scores (within reference::per_channel_int8_score_bound).
template <unsigned B>
void check_int8_tiles(const kvq::PerChannel<B>& c, const std::byte* tiles, std::size_t n_tiles, std::size_t n_q,
                      std::size_t misalign, const std::vector<float>& qbuf) {
  const std::size_t d = c.head_dim(), g = c.tokens_per_tile(), bt = c.bytes_per_tile(), n = n_tiles * g;
  INFO("pc" << B << "/g" << g << " int8 head_dim " << d << " n_q " << n_q << " tiles " << n_tiles << " misalign "
            << misalign << " target " << kvq::kernels::target_name());
  const float sentinel = -12345.0f;
  const std::size_t q_stride = d + 3, out_stride = n + 5;
  REQUIRE(qbuf.size() >= misalign + n_q * q_stride);
  const float* q = qbuf.data() + misalign;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel), want(g), f32(g), y(g * d);
  std::vector<double> bound(g);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores_int8(c, q, n_q, q_stride, tiles, n_tiles, out, out_stride);
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    const float* qv = q + qi * q_stride;
    for (std::size_t i = 0; i < n_tiles; ++i) {
      const std::byte* tile = tiles + i * bt;
      kvq::reference::per_channel_scores_int8<B>(qv, tile, d, g, want.data());
      kvq::reference::per_channel_int8_score_bound<B>(qv, tile, d, g, bound.data());
      c.scores(qv, tile, f32.data());
      c.decode_tile(tile, y.data());
      std::vector<kvq::reference::Int8QueryBlock> qb(d / 32);
      const float bias = kvq::reference::per_channel_fold_int8<B>(qv, tile, d, g, qb.data());
      std::vector<std::uint8_t> k(g);
      const auto meta = kvq::reference::read_meta<B>(tile, d, g);
      double bias_mag = std::fabs(double(bias));  // |terms| of the offsets' sum, then of the int8 sum
      for (std::size_t j = 0; j < d; ++j) bias_mag += std::fabs(double(qv[j]) * meta.offset[j]);
      std::vector<double> mag(g, bias_mag);
      const std::size_t run = kvq::reference::per_channel_run_bytes<B>(g);
      for (std::size_t j = 0; j < d; ++j) {
        kvq::reference::unpack_run<B>(tile + j * run, g, k.data());
        for (std::size_t t = 0; t < g; ++t) mag[t] += std::fabs(double(qb[j / 32].d) * qb[j / 32].c[j % 32] * k[t]);
      }
      for (std::size_t t = 0; t < g; ++t) {
        const float got = out[qi * out_stride + i * g + t];
        INFO("query " << qi << " tile " << i << " token " << t << ": kernel " << got << " int8 reference " << want[t]
                      << " f32 " << f32[t] << " bound " << bound[t]);
        if (!std::isfinite(want[t])) {
          REQUIRE(!std::isfinite(got));
          if (std::isnan(want[t])) REQUIRE(std::isnan(got));
          continue;
        }
        REQUIRE(std::fabs(double(got) - want[t]) <= kRel * mag[t] + 1e-30);
        double f32_mag = 0.0;
        for (std::size_t j = 0; j < d; ++j) f32_mag += std::fabs(double(qv[j]) * y[t * d + j]);
        REQUIRE(std::fabs(double(got) - f32[t]) <= bound[t] * (1 + 1e-6) + kRel * (mag[t] + f32_mag) + 1e-30);
      }
    }
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);
  }
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(outbuf[i] == sentinel);
}

}  // namespace

TEMPLATE_TEST_CASE_SIG("kernels per-channel: int8 scores equal their reference and keep the f32 bound on every target",
                       "[kernels][per_channel][int8]", ((unsigned B), B), 2, 3, 4) {
  const auto ran = kvq::test::for_each_target([] {
    kvq::Rng rng(41 + B);
    for (std::size_t g : {64u, 128u, 256u})
      for (std::size_t d : {32u, 96u, 128u}) {
        const kvq::PerChannel<B> c(d, g);
        if (!kvq::kernels::supports_int8_scores(c)) continue;
        for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u}) {
          const std::size_t n_tiles = 1 + (n_q + g / 64) % 3, misalign = (n_q + d / 32) % 4;
          const std::vector<std::byte> tiles = encoded_tiles(c, n_tiles, misalign, rng);
          const std::vector<float> q = kvq::test::random_vector(rng, misalign + n_q * (d + 3));
          check_int8_tiles(c, tiles.data() + misalign, n_tiles, n_q, misalign, q);
        }
      }
  });
  kvq::test::require_targets_exercised(ran);
  CHECK(kvq::kernels::supports_int8_scores(kvq::PerChannel<B>(128, 128)));  // the default tiles
  CHECK_FALSE(kvq::kernels::supports_int8_scores(kvq::PerChannel<B>(64, 32)));
  CHECK_FALSE(kvq::kernels::supports_int8_scores(kvq::PerChannel<B>(40, 128)));
  CHECK(kvq::kernels::supports_int8_scores(kvq::PerChannel<B>(64, 64)) == (B == 4));
}

TEMPLATE_TEST_CASE_SIG("kernels per-channel: int8 scores of hostile tiles and queries are the reference's",
                       "[kernels][per_channel][int8]", ((unsigned B), B), 2, 3, 4) {
  // Random code and metadata bytes (scales from subnormal to Inf/NaN), query
  // values with an outlier, a NaN and an Inf.
  const kvq::PerChannel<B> c(96, 128);
  const std::size_t d = 96, bt = c.bytes_per_tile(), n_tiles = 3, n_q = 3;
  kvq::Rng rng(99);
  std::vector<std::byte> tiles(n_tiles * bt);
  for (auto& b : tiles) b = static_cast<std::byte>(rng.next_u64());
  const std::uint16_t heads[3][4] = {{0x1C00, 0x2000, 0x2400, 0xC000}, {0x0001, 0x7BFF, 0x03FF, 0xFBFF},
                                     {0x7C00, 0x3C00, 0x7E00, 0x0000}};
  for (std::size_t i = 0; i < n_tiles; ++i)
    for (std::size_t f = 0; f < 4; ++f) kvq::bits::store_u16(tiles.data() + i * bt + bt - 8 + 2 * f, heads[i][f]);
  std::vector<float> q = kvq::test::random_vector(rng, n_q * (d + 3));
  q[5] *= 50.0f;
  q[(d + 3) + 40] = std::numeric_limits<float>::quiet_NaN();
  q[2 * (d + 3) + 70] = std::numeric_limits<float>::infinity();
  const auto ran = kvq::test::for_each_target([&] { check_int8_tiles(c, tiles.data(), n_tiles, n_q, 0, q); });
  kvq::test::require_targets_exercised(ran);
}

TEST_CASE("kernels per-channel: refuses inconsistent arguments", "[kernels][per_channel]") {
  const kvq::PerChannel<4> c(64, 32);
  std::vector<std::byte> tiles(2 * c.bytes_per_tile());
  std::vector<float> q(2 * 64), out(2 * 64), w(2 * 64), acc(2 * 64);
  kvq::kernels::scores(c, nullptr, 0, 64, nullptr, 2, nullptr, 64);  // empty group: no-op
  // The output stride must cover every token of every tile (2 x 32).
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 2, 64, tiles.data(), 2, out.data(), 63), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate(c, w.data(), 2, 63, tiles.data(), 2, acc.data(), 64), kvq::Error);
  CHECK_NOTHROW(kvq::kernels::accumulate(c, w.data(), 2, 64, tiles.data(), 2, acc.data(), 64));
  CHECK_THROWS_AS(kvq::kernels::scores_int8(c, q.data(), 1, 64, tiles.data(), 2, out.data(), 64), kvq::Error);  // G = 32
  const kvq::PerChannel<4> c64(64, 64);
  std::vector<std::byte> tiles64(c64.bytes_per_tile());
  CHECK_THROWS_AS(kvq::kernels::scores_int8(c64, q.data(), 2, 64, tiles64.data(), 1, out.data(), 63), kvq::Error);
}
