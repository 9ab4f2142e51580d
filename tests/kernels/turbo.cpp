// The turbo SIMD kernels (turbo2/3/4, rotated space) against the scalar
// reference, on every SIMD target this machine can run: head_dim 16..256
// including the non-power-of-two 80/96/112, GQA groups of 1..8, odd row
// counts, unaligned pointers, every index value in every lane, and hostile
// fp16 scales.
//
#include "kvq_test.hpp"
#include "support/random_vector.hpp"
#include "support/targets.hpp"

#include <kvq/codec/turbo.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/rng.hpp>
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
    for (std::size_t n_q : {1u, 2u, 3u, 4u, 5u, 8u})
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

TEST_CASE("kernels turbo: refuses inconsistent arguments like the uniform kernels", "[kernels][turbo]") {
  const kvq::Turbo4 c(64);
  std::vector<std::byte> rows(4 * c.bytes_per_tile());
  std::vector<float> q(2 * 64), out(8), w(8), acc(2 * 64);
  kvq::kernels::scores(c, nullptr, 0, 64, nullptr, 5, nullptr, 5);  // empty group: no-op
  CHECK_THROWS_AS(kvq::kernels::scores(c, q.data(), 2, 32, rows.data(), 4, out.data(), 4), kvq::Error);
  CHECK_THROWS_AS(kvq::kernels::accumulate(c, w.data(), 2, 4, rows.data(), 4, acc.data(), 63), kvq::Error);
}
