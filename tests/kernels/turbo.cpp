// The turbo SIMD kernels (turbo2/3/4, rotated space) against the scalar
// reference, on every SIMD target this machine can run: head_dim 16..256
// including the non-power-of-two 80/96/112, GQA groups of 1..8, odd row
// counts, unaligned pointers, every index value in every lane, and hostile
// fp16 scales. The int8-query scores (head_dim a multiple of 32) the same way,
// against the int8 reference and within its bound of the f32 scores.
//
#include "kvq_test.hpp"
#include "support/int8_queries.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/codec/turbo.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/int8_query.hpp>
#include <kvq/reference/turbo.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

// alpha * L[idx] per coordinate of a row: what the kernels multiply.
template <unsigned B>
std::vector<float> decoded(const kvq::Turbo<B>& c, const std::byte* row) {
  std::vector<float> y(c.head_dim());
  kvq::reference::turbo_decode_rotated<B>(row, c.head_dim(), c.levels().data(), y.data());
  return y;
}

// Scores and accumulate of n rows (starting `misalign` bytes past a 64-byte
// boundary) for n_q queries with strides and sentinels, against the codec's
// scalar scores/accumulate in the same (rotated) working space. Tolerance:
// float rounding of any summation order, 2e-6 * sum |q_i y_i|.
template <unsigned B>
void check_rows(const kvq::Turbo<B>& c, const std::byte* rows, std::size_t n, std::size_t n_q,
                std::size_t misalign, kvq::Rng& rng) {
  const std::size_t hd = c.head_dim(), bt = c.bytes_per_tile();
  INFO("turbo" << B << " head_dim " << hd << " n_q " << n_q << " n " << n << " misalign " << misalign << " target "
               << kvq::kernels::target_name());
  const float sentinel = -12345.0f;
  const std::size_t q_stride = hd + 3, out_stride = n + 2;
  std::vector<float> qbuf = kvq::test::random_vector(rng, misalign + n_q * q_stride);
  const float* q = qbuf.data() + misalign;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores(c, q, n_q, q_stride, rows, n, out, out_stride);
  for (std::size_t t = 0; t < n; ++t) {
    const std::vector<float> y = decoded(c, rows + t * bt);
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      float want;
      c.scores(q + qi * q_stride, rows + t * bt, &want);
      double mag = 0;
      for (std::size_t j = 0; j < hd; ++j) mag += std::fabs(double(q[qi * q_stride + j]) * y[j]);
      const float got = out[qi * out_stride + t];
      INFO("scores row " << t << " query " << qi << ": kernel " << got << " reference " << want);
      REQUIRE(std::fabs(double(got) - want) <= 2e-6 * mag + 1e-30);
    }
  }
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);

  const std::size_t w_stride = n + 1, acc_stride = hd + 5;
  std::vector<float> wbuf = kvq::test::random_vector(rng, misalign + n_q * w_stride);
  const float* w = wbuf.data() + misalign;
  std::vector<float> accbuf(misalign + n_q * acc_stride, sentinel), ref(n_q * hd), mag(n_q * hd);
  float* acc = accbuf.data() + misalign;
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t j = 0; j < hd; ++j) {
      acc[qi * acc_stride + j] = ref[qi * hd + j] = static_cast<float>(rng.normal());
      mag[qi * hd + j] = std::fabs(ref[qi * hd + j]);
    }
  kvq::kernels::accumulate(c, w, n_q, w_stride, rows, n, acc, acc_stride);
  for (std::size_t t = 0; t < n; ++t) {
    const std::vector<float> y = decoded(c, rows + t * bt);
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      const float wt = w[qi * w_stride + t];
      c.accumulate(ref.data() + qi * hd, &wt, rows + t * bt);
      for (std::size_t j = 0; j < hd; ++j) mag[qi * hd + j] += std::fabs(wt * y[j]);
    }
  }
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    for (std::size_t j = 0; j < hd; ++j) {
      INFO("accumulate query " << qi << " coordinate " << j);
      REQUIRE(std::fabs(double(acc[qi * acc_stride + j]) - ref[qi * hd + j]) <= 2e-6 * mag[qi * hd + j] + 1e-30);
    }
    for (std::size_t j = hd; j < acc_stride; ++j) REQUIRE(acc[qi * acc_stride + j] == sentinel);
  }
}

// n rows encoded from random vectors of varied norms.
template <unsigned B>
std::vector<std::byte> encoded_turbo_rows(const kvq::Turbo<B>& c, std::size_t n, std::size_t misalign, kvq::Rng& rng) {
  std::vector<std::byte> bytes(misalign + n * c.bytes_per_tile());
  for (std::size_t t = 0; t < n; ++t) {
    std::vector<float> x = kvq::test::random_vector(rng, c.head_dim());
    const float scale = static_cast<float>(0.05 + 4.0 * rng.uniform());
    for (auto& v : x) v *= scale;
    c.encode_tile(x.data(), bytes.data() + misalign + t * c.bytes_per_tile());
  }
  return bytes;
}

template <unsigned B>
void check_all_turbo_shapes() {
  kvq::Rng rng(7 + B);
  for (std::size_t hd : {16u, 64u, 80u, 96u, 112u, 128u, 256u}) {
    const kvq::Turbo<B> c(hd);
    for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 11u})
      for (std::size_t n : {1u, 3u, 8u, 13u, 33u, 70u}) {
        const std::size_t misalign = (n_q + n + hd / 16) % 4;
        const std::vector<std::byte> rows = encoded_turbo_rows(c, n, misalign, rng);
        check_rows(c, rows.data() + misalign, n, n_q, misalign, rng);
      }
  }
}

}  // namespace

TEMPLATE_TEST_CASE_SIG("kernels turbo: scores and accumulate equal the reference on every target",
                       "[kernels][turbo]", ((unsigned B), B), 2, 3, 4) {
  const auto ran = kvq::test::for_each_target([] { check_all_turbo_shapes<B>(); });
  kvq::test::require_targets_exercised(ran);
}

TEMPLATE_TEST_CASE_SIG("kernels turbo: every index in every lane, extreme and hostile scales",
                       "[kernels][turbo]", ((unsigned B), B), 2, 3, 4) {
  // Random index bytes reach every codebook entry in every position (a wrong
  // bit plane or shift shows up here even where encoded data rarely would),
  // with fp16 scales from subnormal to large, and Inf/NaN in two rows.
  const kvq::Turbo<B> c(128);
  const std::size_t n = 41, bt = c.bytes_per_tile();
  kvq::Rng rng(1234);
  std::vector<std::byte> rows(n * bt);
  for (auto& b : rows) b = static_cast<std::byte>(rng.next_u64());
  const std::uint16_t scales[] = {0x0001, 0x03FF, 0x3C00, 0x7BFF, 0xBC00, 0x1234, 0x4A00};
  for (std::size_t t = 0; t < n; ++t) kvq::bits::store_u16(rows.data() + t * bt, scales[t % 7]);
  kvq::bits::store_u16(rows.data() + 5 * bt, 0x7C00);   // +Inf
  kvq::bits::store_u16(rows.data() + 11 * bt, 0x7E00);  // NaN
  const std::vector<float> q = kvq::test::random_vector(rng, 128);
  const auto ran = kvq::test::for_each_target([&] {
    std::vector<float> out(n);
    kvq::kernels::scores(c, q.data(), 1, 128, rows.data(), n, out.data(), n);
    for (std::size_t t = 0; t < n; ++t) {
      INFO("row " << t << " target " << kvq::kernels::target_name());
      if (t == 5 || t == 11) {
        REQUIRE(!std::isfinite(out[t]));
        continue;
      }
      float want;
      c.scores(q.data(), rows.data() + t * bt, &want);
      const std::vector<float> y = decoded(c, rows.data() + t * bt);
      double mag = 0;
      for (std::size_t j = 0; j < 128; ++j) mag += std::fabs(double(q[j]) * y[j]);
      REQUIRE(std::fabs(double(out[t]) - want) <= 2e-6 * mag + 1e-30);
    }
    // Accumulate over the 5 finite rows equals the reference; a run that
    // contains the Inf row poisons the accumulator it is added to (as in the
    // reference, even at weight 0: 0 * Inf), and only that one.
    std::vector<float> acc(2 * 128, 0.0f), ref(128, 0.0f), w(2 * n, 1.0f);
    kvq::kernels::accumulate(c, w.data(), 1, n, rows.data(), 5, acc.data(), 128);
    double mag = 0;
    for (std::size_t t = 0; t < 5; ++t) {
      c.accumulate(ref.data(), &w[t], rows.data() + t * bt);
      for (float v : decoded(c, rows.data() + t * bt)) mag = std::max(mag, std::fabs(double(v)));
    }
    for (std::size_t j = 0; j < 128; ++j) REQUIRE(std::fabs(double(acc[j]) - ref[j]) <= 5 * 2e-6 * mag + 1e-30);
    std::fill(acc.begin(), acc.end(), 0.0f);
    kvq::kernels::accumulate(c, w.data(), 1, n, rows.data(), 4, acc.data() + 128, 128);  // query 1: rows 0..3
    kvq::kernels::accumulate(c, w.data(), 1, n, rows.data(), n, acc.data(), 128);        // query 0: all rows
    for (std::size_t j = 0; j < 128; ++j) {
      REQUIRE(!std::isfinite(acc[j]));
      REQUIRE(std::isfinite(acc[128 + j]));
    }
  });
  kvq::test::require_targets_exercised(ran);
}

namespace {

// |terms| of the int8 score of one row: the scale of its f32 rounding.
template <unsigned B>
double int8_magnitude(const kvq::Turbo<B>& c, const kvq::reference::Int8QueryBlock* qb, const std::byte* row) {
  const std::size_t hd = c.head_dim();
  std::vector<std::uint8_t> idx(hd);
  for (std::size_t g = 0; g < hd / 16; ++g)
    kvq::reference::turbo_unpack_group<B>(row + 2 + g * kvq::reference::turbo_group_bytes(B), &idx[16 * g]);
  const auto& cb = c.int8_codebook();
  double mag = 0.0;
  for (std::size_t j = 0; j < hd; ++j) mag += std::fabs(double(qb[j / 32].d) * qb[j / 32].c[j % 32] * cb.levels[idx[j]]);
  return mag * std::fabs(double(kvq::half_bits_to_float(kvq::bits::load_u16(row)))) * cb.step;
}

// int8 scores of n rows for n_q queries (strides, sentinels, misaligned),
// against the int8 reference (up to summation order) and the f32 scores
// (within the contract's bound).
template <unsigned B>
void check_int8_rows(const kvq::Turbo<B>& c, const std::byte* rows, std::size_t n, std::size_t n_q,
                     std::size_t misalign, bool hostile, kvq::Rng& rng) {
  const std::size_t hd = c.head_dim(), bt = c.bytes_per_tile();
  INFO("turbo" << B << " int8 head_dim " << hd << " n_q " << n_q << " n " << n << " misalign " << misalign
               << " target " << kvq::kernels::target_name());
  const std::size_t q_stride = hd + 5, out_stride = n + 3;
  const std::vector<float> qbuf = kvq::test::int8_test_queries(rng, n_q + 1, q_stride, hd, hostile);
  const float* q = qbuf.data() + misalign;
  kvq::kernels::Int8Queries qq;
  kvq::kernels::quantize_queries(q, n_q, q_stride, hd, qq);
  const float sentinel = -12345.0f;
  std::vector<float> outbuf(misalign + n_q * out_stride, sentinel);
  float* out = outbuf.data() + misalign;
  kvq::kernels::scores(c, qq, rows, n, out, out_stride);
  const auto& cb = c.int8_codebook();
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    const float* qv = q + qi * q_stride;
    const auto qb = kvq::test::reference_blocks(qv, hd);
    for (std::size_t t = 0; t < n; ++t) {
      const std::byte* row = rows + t * bt;
      const float got = out[qi * out_stride + t];
      const float want = kvq::reference::turbo_dot_row_int8<B>(qb.data(), row, hd, cb.levels, cb.step);
      INFO("row " << t << " query " << qi << ": kernel " << got << " int8 reference " << want);
      if (!std::isfinite(want)) {
        REQUIRE(!std::isfinite(got));
        if (std::isnan(want)) REQUIRE(std::isnan(got));
        continue;
      }
      const double mag = int8_magnitude(c, qb.data(), row);
      REQUIRE(std::fabs(double(got) - want) <= 2e-6 * mag + 1e-30);
      float exact;
      c.scores(qv, row, &exact);
      const std::vector<float> y = decoded(c, row);
      double f32_mag = 0.0;
      for (std::size_t j = 0; j < hd; ++j) f32_mag += std::fabs(double(qv[j]) * y[j]);
      const double bound = kvq::reference::turbo_int8_score_bound<B>(qb.data(), row, hd, c.levels().data(), cb);
      INFO("f32 score " << exact << " bound " << bound);
      REQUIRE(std::fabs(double(got) - exact) <= bound * (1 + 1e-6) + 4e-6 * (mag + f32_mag) + 1e-30);
    }
    for (std::size_t t = n; t < out_stride; ++t) REQUIRE(out[qi * out_stride + t] == sentinel);
  }
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(outbuf[i] == sentinel);
}

}  // namespace

TEMPLATE_TEST_CASE_SIG("kernels turbo: int8 scores equal the int8 reference and keep the f32 contract on every target",
                       "[kernels][turbo][int8]", ((unsigned B), B), 2, 3, 4) {
  const auto ran = kvq::test::for_each_target([] {
    kvq::Rng rng(31 + B);
    for (std::size_t hd : {32u, 64u, 96u, 128u, 256u}) {
      const kvq::Turbo<B> c(hd);
      REQUIRE(kvq::kernels::supports_int8_scores(c));
      for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u, 11u})
        for (std::size_t n : {1u, 3u, 7u, 8u, 13u, 33u, 48u}) {
          const std::size_t misalign = (n_q + n + hd / 32) % 4;
          const std::vector<std::byte> rows = encoded_rows(c, n, misalign, rng);
          check_int8_rows(c, rows.data() + misalign, n, n_q, misalign, false, rng);
        }
    }
  });
  kvq::test::require_targets_exercised(ran);
  CHECK_FALSE(kvq::kernels::supports_int8_scores(kvq::Turbo<B>(80)));  // f32 scores for 80 and 112
  CHECK_FALSE(kvq::kernels::supports_int8_scores(kvq::Turbo<B>(112)));
}

TEMPLATE_TEST_CASE_SIG("kernels turbo: int8 scores of hostile rows and queries are the reference's",
                       "[kernels][turbo][int8]", ((unsigned B), B), 2, 3, 4) {
  // Random index bytes (every entry in every lane), fp16 scales from
  // subnormal to Inf/NaN, NaN/Inf query blocks; 96 = 3 blocks, the odd tail
  // of the 2-block targets.
  const std::size_t hd = 96, n = 37;
  const kvq::Turbo<B> c(hd);
  const std::size_t bt = c.bytes_per_tile();
  kvq::Rng rng(4321);
  std::vector<std::byte> rows(n * bt);
  for (auto& b : rows) b = static_cast<std::byte>(rng.next_u64());
  const std::uint16_t scales[] = {0x0001, 0x03FF, 0x3C00, 0x7BFF, 0xBC00, 0x7C00, 0xFE00, 0x4A00};
  for (std::size_t t = 0; t < n; ++t) kvq::bits::store_u16(rows.data() + t * bt, scales[t % 8]);
  const auto ran = kvq::test::for_each_target([&] {
    kvq::Rng qrng(6);
    check_int8_rows(c, rows.data(), n, 5, 0, true, qrng);
  });
  kvq::test::require_targets_exercised(ran);
}

namespace {

// accumulate_int8 of n rows for n_q queries against the f32 reference, within
// the contract's bound (kernels/dispatch.hpp): per tile of 32 rows (s / 2)
// sum |l[idx]|, plus e_L sum |w alpha|, plus f32 rounding; a tile with a
// non-finite alpha (or weight) makes the query's accumulator non-finite.
template <unsigned B>
void check_int8_accumulate(const kvq::Turbo<B>& c, const std::byte* rows, std::size_t n, std::size_t n_q,
                           std::size_t misalign, kvq::Rng& rng) {
  const std::size_t hd = c.head_dim(), bt = c.bytes_per_tile();
  INFO("turbo" << B << " accumulate_int8 head_dim " << hd << " n_q " << n_q << " n " << n << " misalign " << misalign
               << " target " << kvq::kernels::target_name());
  const auto& cb = c.int8_codebook();
  const float sentinel = -12345.0f;
  const std::size_t w_stride = n + 1, acc_stride = hd + 5;
  std::vector<float> wbuf = kvq::test::random_vector(rng, misalign + n_q * w_stride);
  const float* w = wbuf.data() + misalign;
  std::vector<float> accbuf(misalign + n_q * acc_stride, sentinel), ref(n_q * hd);
  std::vector<double> bound(n_q * hd, 0.0);
  float* acc = accbuf.data() + misalign;
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t j = 0; j < hd; ++j) {
      acc[qi * acc_stride + j] = ref[qi * hd + j] = static_cast<float>(rng.normal());
      bound[qi * hd + j] = 2e-6 * std::fabs(ref[qi * hd + j]);
    }
  kvq::kernels::accumulate_int8(c, w, n_q, w_stride, rows, n, acc, acc_stride);
  std::vector<bool> poisoned(n_q, false);
  std::vector<std::uint8_t> idx(hd);
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t t0 = 0; t0 < n; t0 += 32) {
      const std::size_t t1 = std::min(n, t0 + 32);
      double wmax = 0.0, amax = 0.0;
      for (std::size_t t = t0; t < t1; ++t) {
        const double alpha = kvq::half_bits_to_float(kvq::bits::load_u16(rows + t * bt));
        wmax = std::max(wmax, std::fabs(double(w[qi * w_stride + t])));
        amax = std::isfinite(alpha) ? std::max(amax, std::fabs(alpha * cb.step)) : alpha;
        if (!std::isfinite(alpha)) poisoned[qi] = true;
      }
      const double s = wmax * amax / 127.0;
      for (std::size_t t = t0; t < t1; ++t) {
        const float wt = w[qi * w_stride + t];
        c.accumulate(ref.data() + qi * hd, &wt, rows + t * bt);
        const double wa = std::fabs(wt * double(kvq::half_bits_to_float(kvq::bits::load_u16(rows + t * bt))));
        for (std::size_t g = 0; g < hd / 16; ++g)
          kvq::reference::turbo_unpack_group<B>(rows + t * bt + 2 + g * kvq::reference::turbo_group_bytes(B), &idx[16 * g]);
        for (std::size_t j = 0; j < hd; ++j)
          bound[qi * hd + j] += 0.5 * s * std::abs(int(cb.levels[idx[j]])) + (cb.error + 4e-6 * std::fabs(c.levels()[idx[j]])) * wa;
      }
    }
  for (std::size_t qi = 0; qi < n_q; ++qi) {
    for (std::size_t j = 0; j < hd; ++j) {
      const float got = acc[qi * acc_stride + j];
      INFO("query " << qi << " coordinate " << j << ": kernel " << got << " f32 " << ref[qi * hd + j] << " bound "
                    << bound[qi * hd + j]);
      if (poisoned[qi]) {
        REQUIRE(!std::isfinite(got));
        continue;
      }
      REQUIRE(std::fabs(double(got) - ref[qi * hd + j]) <= bound[qi * hd + j] * (1 + 1e-6) + 1e-30);
    }
    for (std::size_t j = hd; j < acc_stride; ++j) REQUIRE(acc[qi * acc_stride + j] == sentinel);
  }
  for (std::size_t i = 0; i < misalign; ++i) REQUIRE(accbuf[i] == sentinel);
}

}  // namespace

TEMPLATE_TEST_CASE_SIG("kernels turbo: accumulate_int8 keeps its bound of the f32 accumulate on every target",
                       "[kernels][turbo][int8]", ((unsigned B), B), 2, 3, 4) {
  const auto ran = kvq::test::for_each_target([] {
    kvq::Rng rng(51 + B);
    for (std::size_t hd : {32u, 80u, 96u, 128u, 256u}) {  // 80: accumulate() itself
      const kvq::Turbo<B> c(hd);
      for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u})
        for (std::size_t n : {1u, 3u, 7u, 13u, 33u, 70u}) {
          const std::size_t misalign = (n_q + n + hd / 32) % 4;
          const std::vector<std::byte> rows = encoded_rows(c, n, misalign, rng);
          check_int8_accumulate(c, rows.data() + misalign, n, n_q, misalign, rng);
        }
    }
  });
  kvq::test::require_targets_exercised(ran);
}

TEMPLATE_TEST_CASE_SIG("kernels turbo: accumulate_int8 of hostile rows", "[kernels][turbo][int8]", ((unsigned B), B),
                       2, 3, 4) {
  // Random index bytes, fp16 alphas from subnormal to large; then an Inf and
  // a NaN alpha in the second tile of 32 rows.
  const kvq::Turbo<B> c(96);
  const std::size_t n = 70, bt = c.bytes_per_tile();
  kvq::Rng rng(2024);
  std::vector<std::byte> rows(n * bt);
  for (auto& b : rows) b = static_cast<std::byte>(rng.next_u64());
  const std::uint16_t scales[] = {0x0001, 0x03FF, 0x3C00, 0x7BFF, 0xBC00, 0x1234, 0x4A00};
  for (std::size_t t = 0; t < n; ++t) kvq::bits::store_u16(rows.data() + t * bt, scales[t % 7]);
  const auto ran = kvq::test::for_each_target([&] {
    kvq::Rng wrng(3);
    check_int8_accumulate(c, rows.data(), n, 3, 0, wrng);
  });
  kvq::test::require_targets_exercised(ran);
  kvq::bits::store_u16(rows.data() + 40 * bt, 0x7C00);
  kvq::bits::store_u16(rows.data() + 45 * bt, 0x7E00);
  kvq::test::for_each_target([&] {
    kvq::Rng wrng(4);
    check_int8_accumulate(c, rows.data(), n, 2, 0, wrng);
  });
}

TEST_CASE("kernels turbo: refuses inconsistent arguments like the uniform kernels", "[kernels][turbo]") {
  const kvq::Turbo4 c(64);
  std::vector<std::byte> rows(4 * c.bytes_per_tile());
  std::vector<float> q(2 * 64), out(8), w(8), acc(2 * 64);
  kvq::kernels::scores(c, nullptr, 0, 64, nullptr, 5, nullptr, 5);  // empty group: no-op
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 2, 32, rows.data(), 4, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate(c, w.data(), 2, 4, rows.data(), 4, acc.data(), 63), kvq::Error);
  kvq::kernels::Int8Queries qq;
  kvq::kernels::quantize_queries(q.data(), 2, 64, 64, qq);
  CHECK_THROWS_AS(kvq::kernels::scores(kvq::Turbo4(128), qq, rows.data(), 2, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::scores(c, qq, rows.data(), 4, out.data(), 3), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::scores(c, qq, nullptr, 4, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate_int8(c, w.data(), 2, 4, rows.data(), 4, acc.data(), 63), kvq::Error);
}
