// The uniform-family SIMD kernels against the scalar reference, on every
// SIMD target this machine can run (each one forced in turn), over the shapes
// that exercise tails and register tiling: odd row counts, GQA groups of 1..8,
// head_dim 32..256, and unaligned query/row/output pointers.
#include "kvq_test.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <kvq/codec/uniform.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/uniform.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace {

using kvq::reference::kBlockValues;

// A run of n rows encoded from random data, stored `offset` bytes past a
// 64-byte boundary so the kernels see unaligned rows.
template <class Codec>
struct Run {
  Run(const Codec& c, std::size_t n, std::size_t offset, kvq::Rng& rng)
      : n(n), bytes(n * c.bytes_per_tile() + offset + 64), rows(bytes.data() + offset) {
    std::vector<float> x(c.head_dim());
    for (std::size_t t = 0; t < n; ++t) {
      // Mixed scales and a per-row offset so the asymmetric formats' minimum matters.
      const double scale = 0.1 + 3.0 * rng.uniform(), shift = rng.normal();
      for (auto& v : x) v = static_cast<float>(shift + scale * rng.normal());
      c.encode_tile(x.data(), rows + t * c.bytes_per_tile());
    }
  }
  std::size_t n;
  std::vector<std::byte> bytes;
  std::byte* rows;
};

// |q_j| (|d c_j| + |m|) per value of a row: the scale of the rounding errors
// of any evaluation order of q . x (d c and m may nearly cancel in x). Without
// the minimum, |d c_j|: the part of a value that accumulate_bf16 multiplies in
// bf16 (its contract: kernels/dispatch.hpp).
template <class Block>
void value_magnitudes(const std::byte* row, std::size_t hd, float* mag, bool with_min = true) {
  int c[kBlockValues];
  float d, m;
  for (std::size_t b = 0; b < hd / kBlockValues; ++b) {
    Block::unpack(row + b * Block::bytes, c, d, m);
    for (std::size_t j = 0; j < kBlockValues; ++j)
      mag[b * kBlockValues + j] = std::fabs(d * static_cast<float>(c[j])) + (with_min ? std::fabs(m) : 0.0f);
  }
}

// accumulate_bf16's relative bound on sum_t |w_t d_t c_t|: one rounding to
// 8 significant bits.
constexpr double kBf16Rel = 1.0 / 256;

enum class Products { f32, bf16, int8 };

// accumulate_int8's bound for one query: (s / 2) sum_{t in tile} |c_t[j]| per
// tile of 32 rows and block, s = max_{t in tile} |w_t| max_{t in tile} |d_t| / 127.
template <class Block>
void int8_bound(const std::byte* rows, std::size_t tile_bytes, std::size_t n, std::size_t hd, const float* w,
                double* bound) {
  int c[kBlockValues];
  float d, m;
  for (std::size_t t0 = 0; t0 < n; t0 += 32)
    for (std::size_t b = 0; b < hd / kBlockValues; ++b) {
      double wmax = 0.0, dmax = 0.0;
      for (std::size_t t = t0; t < std::min(n, t0 + 32); ++t) {
        Block::unpack(rows + t * tile_bytes + b * Block::bytes, c, d, m);
        wmax = std::max(wmax, double(std::fabs(w[t])));
        dmax = std::max(dmax, double(std::fabs(d)));
      }
      const double pmax = wmax * dmax;
      for (std::size_t t = t0; t < std::min(n, t0 + 32); ++t) {
        Block::unpack(rows + t * tile_bytes + b * Block::bytes, c, d, m);
        for (std::size_t j = 0; j < kBlockValues; ++j)
          bound[b * kBlockValues + j] += 1.000001 * (pmax / 127.0) / 2 * std::abs(c[j]);
      }
    }
}

// accumulate (or accumulate_bf16 / accumulate_int8, with their contracts'
// bounds) onto non-zero accumulators, weights with a stride and misaligned.
template <class Codec>
void check_accumulate(const Codec& c, const Run<Codec>& run, std::size_t n_q, std::size_t misalign, kvq::Rng& rng,
                      Products products) {
  const bool bf16 = products == Products::bf16;
  using Block = typename Codec::block_type;
  const std::size_t hd = c.head_dim(), tile = c.bytes_per_tile(), n = run.n;
  INFO("products " << static_cast<int>(products) << " bf16 path active " << kvq::kernels::bf16_accumulate_active());
  const float sentinel = -12345.0f;
  const std::size_t w_stride = n + 2, acc_stride = hd + 7;
  std::vector<float> wbuf = kvq::test::random_vector(rng, misalign + n_q * w_stride);
  const float* w = wbuf.data() + misalign;
  std::vector<float> accbuf(misalign + n_q * acc_stride, sentinel);
  float* acc = accbuf.data() + misalign;
  std::vector<float> ref(n_q * hd), mag(n_q * hd), cmag(n_q * hd, 0.0f), y(hd), yc(hd);
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t j = 0; j < hd; ++j) {
      acc[qi * acc_stride + j] = ref[qi * hd + j] = static_cast<float>(rng.normal());
      mag[qi * hd + j] = std::fabs(ref[qi * hd + j]);
    }
  std::vector<double> ibound(n_q * hd, 0.0);
  if constexpr (kvq::kernels::kHasBf16Accumulate<Codec>)
    if (products == Products::bf16) kvq::kernels::accumulate_bf16(c, w, n_q, w_stride, run.rows, n, acc, acc_stride);
  if constexpr (kvq::kernels::kHasInt8Accumulate<Codec>)
    if (products == Products::int8) {
      kvq::kernels::accumulate_int8(c, w, n_q, w_stride, run.rows, n, acc, acc_stride);
      for (std::size_t qi = 0; qi < n_q; ++qi)
        int8_bound<Block>(run.rows, tile, n, hd, w + qi * w_stride, ibound.data() + qi * hd);
    }
  if (products == Products::f32) kvq::kernels::accumulate(c, w, n_q, w_stride, run.rows, n, acc, acc_stride);
  for (std::size_t t = 0; t < n; ++t) {
    value_magnitudes<Block>(run.rows + t * tile, hd, y.data());
    value_magnitudes<Block>(run.rows + t * tile, hd, yc.data(), false);
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      const float wt = w[qi * w_stride + t];
      kvq::reference::accumulate_row<Block>(ref.data() + qi * hd, wt, run.rows + t * tile, hd);
      for (std::size_t j = 0; j < hd; ++j) {
        mag[qi * hd + j] += std::fabs(wt * y[j]);
        cmag[qi * hd + j] += std::fabs(wt * yc[j]);
      }
    }
  }
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    for (std::size_t j = 0; j < hd; ++j) {
      const float got = acc[qi * acc_stride + j], want = ref[qi * hd + j];
      const double bound =
          2e-6 * mag[qi * hd + j] + (bf16 ? kBf16Rel * cmag[qi * hd + j] : 0.0) + ibound[qi * hd + j] + 1e-30;
      if (!(std::fabs(double(got) - want) <= bound)) {
        INFO("accumulate query " << qi << " lane " << j << ": kernel " << got << " reference " << want << " bound " << bound);
        REQUIRE(false);
      }
    }
    for (std::size_t j = hd; j < acc_stride; ++j) REQUIRE(acc[qi * acc_stride + j] == sentinel);
  }
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(accbuf[i] == sentinel);
}

// Compares scores and accumulate of one shape with the reference; returns the
// number of mismatches (0 expected) so callers can report the shape.
template <class Codec>
void check_shape(const Codec& c, std::size_t n_q, std::size_t n, std::size_t misalign, kvq::Rng& rng) {
  using Block = typename Codec::block_type;
  const std::size_t hd = c.head_dim(), tile = c.bytes_per_tile();
  const Run<Codec> run(c, n, misalign, rng);
  INFO(std::string(Codec::name) << " head_dim " << hd << " n_q " << n_q << " n " << n << " misalign " << misalign
                                << " target " << kvq::kernels::target_name());

  // Queries with a stride larger than head_dim, starting misaligned by
  // `misalign` floats; outputs with gaps that must stay untouched.
  const std::size_t q_stride = hd + 5, out_stride = n + 3;
  std::vector<float> qbuf = kvq::test::random_vector(rng, misalign + n_q * q_stride);
  const float* q = qbuf.data() + misalign;
  const float sentinel = -12345.0f;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores(c, q, n_q, q_stride, run.rows, n, out, out_stride);

  std::vector<float> y(hd);
  for (std::size_t t = 0; t < n; ++t) {
    value_magnitudes<Block>(run.rows + t * tile, hd, y.data());
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      const float* qv = q + qi * q_stride;
      const float ref = kvq::reference::dot_row<Block>(qv, run.rows + t * tile, hd);
      double mag = 0;
      for (std::size_t j = 0; j < hd; ++j) mag += std::fabs(double(qv[j]) * y[j]);
      const float got = out[qi * out_stride + t];
      if (!(std::fabs(double(got) - ref) <= 2e-6 * mag + 1e-30)) {
        INFO("scores row " << t << " query " << qi << ": kernel " << got << " reference " << ref << " sum|q x| " << mag);
        REQUIRE(false);
      }
    }
  }
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(outbuf[i] == sentinel);

  check_accumulate(c, run, n_q, misalign, rng, Products::f32);
  if constexpr (kvq::kernels::kHasBf16Accumulate<Codec>) check_accumulate(c, run, n_q, misalign, rng, Products::bf16);
  if constexpr (kvq::kernels::kHasInt8Accumulate<Codec>) check_accumulate(c, run, n_q, misalign, rng, Products::int8);
}

template <class Codec>
void check_all_shapes() {
  kvq::Rng rng(20240607);
  for (std::size_t hd : {32u, 64u, 128u, 256u}) {
    const Codec c(hd);
    for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 11u})
      for (std::size_t n : {1u, 3u, 7u, 8u, 12u, 33u, 100u})
        check_shape(c, n_q, n, (n_q + n + hd / 32) % 4, rng);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("kernels uniform: scores and accumulate equal the reference on every target",
                   "[kernels][uniform]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  const auto ran = kvq::test::for_each_target([] { check_all_shapes<TestType>(); });
  kvq::test::require_targets_exercised(ran);
}

// accumulate_bf16 takes AMX tiles for groups of 2+ queries where the CPU has
// them, 16 queries per tile: groups past 16 (a second, smaller tile shape),
// row counts around the kernel's pairs of 32-row tiles and 256-row spans, and prefill-sized blocks.
TEMPLATE_TEST_CASE("kernels uniform: bf16 products for large query groups equal the reference within their bound",
                   "[kernels][uniform]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q2_1) {
  kvq::Rng rng(20261202);
  const auto ran = kvq::test::for_each_target([&] {
    INFO("target " << kvq::kernels::target_name() << " AMX " << kvq::kernels::amx_accumulate_active());
    for (std::size_t hd : {64u, 128u}) {
      const TestType c(hd);
      for (std::size_t n : {31u, 64u, 65u, 129u, 300u}) {
        const Run<TestType> run(c, n, n % 5, rng);
        for (std::size_t n_q : {16u, 17u, 40u}) check_accumulate(c, run, n_q, n_q % 3, rng, Products::bf16);
      }
    }
  });
  kvq::test::require_targets_exercised(ran);
}

TEMPLATE_TEST_CASE("kernels uniform: every code value and extreme scales decode like the reference",
                   "[kernels][uniform]", kvq::Q8_0, kvq::Q4_0, kvq::Q4_1, kvq::Q3_1, kvq::Q2_1) {
  // Random bytes cover every code in every position (bit-plane mistakes show
  // up here even where encoded data would rarely use a code), with finite fp16
  // scales from tiny (subnormal) to large.
  using Block = typename TestType::block_type;
  const std::size_t hd = 128;
  const TestType c(hd);
  kvq::Rng rng(99);
  const std::size_t n = 37;
  std::vector<std::byte> rows(n * c.bytes_per_tile());
  for (auto& b : rows) b = static_cast<std::byte>(rng.next_u64());
  for (std::size_t i = 0; i < n * hd / kBlockValues; ++i) {
    std::byte* blk = rows.data() + i * Block::bytes;
    const std::uint16_t scales[] = {0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xBC00, 0x1234};
    kvq::bits::store_u16(blk, scales[i % 7]);
    if (Block::bytes != 34 && Block::bytes != 18) kvq::bits::store_u16(blk + 2, scales[(i + 3) % 7]);
  }
  const std::vector<float> q = kvq::test::random_vector(rng, hd);
  std::vector<float> y(hd);
  const auto ran = kvq::test::for_each_target([&] {
    std::vector<float> out(n);
    kvq::kernels::scores(c, q.data(), 1, hd, rows.data(), n, out.data(), n);
    std::vector<float> acc(hd, 0.0f), ref(hd, 0.0f), mag(hd, 0.0f);
    std::vector<float> w(n, 1.0f);
    kvq::kernels::accumulate(c, w.data(), 1, n, rows.data(), n, acc.data(), hd);
    for (std::size_t t = 0; t < n; ++t) {
      value_magnitudes<Block>(rows.data() + t * c.bytes_per_tile(), hd, y.data());
      double m = 0;
      for (std::size_t j = 0; j < hd; ++j) {
        m += std::fabs(double(q[j]) * y[j]);
        mag[j] += std::fabs(y[j]);
      }
      const float want = kvq::reference::dot_row<Block>(q.data(), rows.data() + t * c.bytes_per_tile(), hd);
      INFO(TestType::name << " row " << t << " target " << kvq::kernels::target_name());
      REQUIRE(std::fabs(double(out[t]) - want) <= 2e-6 * m + 1e-30);
      kvq::reference::accumulate_row<Block>(ref.data(), 1.0f, rows.data() + t * c.bytes_per_tile(), hd);
    }
    for (std::size_t j = 0; j < hd; ++j) REQUIRE(std::fabs(double(acc[j]) - ref[j]) <= 2e-6 * mag[j] + 1e-30);
    if constexpr (kvq::kernels::kHasBf16Accumulate<TestType>) {
      std::vector<float> acc16(hd, 0.0f), cmag(hd, 0.0f), yc(hd);
      kvq::kernels::accumulate_bf16(c, w.data(), 1, n, rows.data(), n, acc16.data(), hd);
      for (std::size_t t = 0; t < n; ++t) {
        value_magnitudes<Block>(rows.data() + t * c.bytes_per_tile(), hd, yc.data(), false);
        for (std::size_t j = 0; j < hd; ++j) cmag[j] += yc[j];
      }
      for (std::size_t j = 0; j < hd; ++j)
        REQUIRE(std::fabs(double(acc16[j]) - ref[j]) <= 2e-6 * mag[j] + kBf16Rel * cmag[j] + 1e-30);
    }
    if constexpr (kvq::kernels::kHasInt8Accumulate<TestType>) {
      std::vector<float> acc8(hd, 0.0f);
      std::vector<double> ib(hd, 0.0);
      kvq::kernels::accumulate_int8(c, w.data(), 1, n, rows.data(), n, acc8.data(), hd);
      int8_bound<Block>(rows.data(), c.bytes_per_tile(), n, hd, w.data(), ib.data());
      for (std::size_t j = 0; j < hd; ++j) REQUIRE(std::fabs(double(acc8[j]) - ref[j]) <= 2e-6 * mag[j] + ib[j] + 1e-30);
    }
  });
  kvq::test::require_targets_exercised(ran);
}

TEST_CASE("kernels uniform: non-finite scales propagate, never crash", "[kernels][uniform]") {
  // A hostile row may hold Inf/NaN scales: the kernels must read it safely
  // and report a non-finite score where the reference does.
  const kvq::Q4_1 c(64);
  std::vector<std::byte> rows(3 * c.bytes_per_tile(), std::byte{0x11});
  kvq::bits::store_u16(rows.data() + c.bytes_per_tile(), 0x7C00);          // row 1: +Inf scale
  kvq::bits::store_u16(rows.data() + 2 * c.bytes_per_tile() + 2, 0x7E00);  // row 2: NaN minimum
  std::vector<float> q(64, 0.5f), out(3);
  kvq::test::for_each_target([&] {
    kvq::kernels::scores(c, q.data(), 1, 64, rows.data(), 3, out.data(), 3);
    CHECK(std::isfinite(out[0]));
    CHECK(!std::isfinite(out[1]));
    CHECK(std::isnan(out[2]));
    // Each row accumulated alone, by both accumulate paths.
    for (int path = 0; path < 3; ++path)
      for (std::size_t t = 0; t < 3; ++t) {
        std::vector<float> acc(64, 0.0f);
        const float one = 1.0f;
        const std::byte* row = rows.data() + t * c.bytes_per_tile();
        if (path == 0)
          kvq::kernels::accumulate(c, &one, 1, 1, row, 1, acc.data(), 64);
        else if (path == 1)
          kvq::kernels::accumulate_bf16(c, &one, 1, 1, row, 1, acc.data(), 64);
        else
          kvq::kernels::accumulate_int8(c, &one, 1, 1, row, 1, acc.data(), 64);
        INFO("path " << path << " row " << t << " value 0 " << acc[0]);
        CHECK(std::isfinite(acc[0]) == (t == 0));
        if (t == 2) CHECK(std::isnan(acc[0]));
      }
  });
}

TEST_CASE("kernels: dispatch reports a target and refuses inconsistent arguments", "[kernels]") {
  const std::string name = kvq::kernels::target_name();
  CHECK(!name.empty());
  const kvq::Q8_0 c(64);
  std::vector<std::byte> rows(4 * c.bytes_per_tile());
  std::vector<float> q(2 * 64), out(8), w(8), acc(2 * 64);
  // Empty runs and empty groups are no-ops, even with null pointers.
  kvq::kernels::scores(c, nullptr, 0, 64, nullptr, 5, nullptr, 5);
  kvq::kernels::accumulate(c, nullptr, 2, 0, nullptr, 0, nullptr, 64);
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 1, 64, nullptr, 4, out.data(), 4), kvq::Error);
  // A query stride below head_dim, an output stride below the row count.
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 2, 32, rows.data(), 4, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 2, 64, rows.data(), 4, out.data(), 3), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate(c, w.data(), 2, 3, rows.data(), 4, acc.data(), 64), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate(c, w.data(), 2, 4, rows.data(), 4, acc.data(), 63), kvq::Error);
  CHECK_NOTHROW(kvq::kernels::accumulate(c, w.data(), 2, 4, rows.data(), 4, acc.data(), 64));
}
