// Splitting a run across threads gives the single-thread result: exactly for
// scores (disjoint outputs), within float tolerance for accumulate (partial
// sums added in chunk order).
#include <kvq/kernels/parallel.hpp>

#include "kvq_test.hpp"

#include <kvq/codec/uniform.hpp>
#include <kvq/core/rng.hpp>

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

TEST_CASE("kernels parallel: ThreadPool runs every task exactly once", "[kernels][parallel]") {
  for (std::size_t threads : {1u, 2u, 3u}) {
    kvq::kernels::ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (std::size_t n : {0u, 1u, 2u, 7u, 64u}) {
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::atomic<int>> hits(n);
        pool(n, [&](std::size_t i) { hits[i].fetch_add(1); });
        for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
      }
    }
  }
}

TEMPLATE_TEST_CASE("kernels parallel: split runs equal the single-thread kernels", "[kernels][parallel]",
                   kvq::Q4_0, kvq::Q2_1) {
  const std::size_t hd = 64, n_q = 4, n = 3001;  // not a multiple of the chunk or tile size
  const TestType c(hd);
  kvq::Rng rng(5);
  std::vector<std::byte> rows(n * c.bytes_per_tile());
  std::vector<float> x(hd);
  for (std::size_t t = 0; t < n; ++t) {
    for (auto& v : x) v = static_cast<float>(rng.normal());
    c.encode_tile(x.data(), rows.data() + t * c.bytes_per_tile());
  }
  std::vector<float> q(n_q * hd), w(n_q * n);
  for (auto& v : q) v = static_cast<float>(rng.normal());
  for (auto& v : w) v = static_cast<float>(rng.uniform());

  std::vector<float> want(n_q * n), acc_want(n_q * hd, 1.0f);
  kvq::kernels::scores(c, q.data(), n_q, hd, rows.data(), n, want.data(), n);
  kvq::kernels::accumulate(c, w.data(), n_q, n, rows.data(), n, acc_want.data(), hd);

  kvq::kernels::ThreadPool pool(2);
  // A caller-supplied parallel_for that runs chunks in reverse order, serially.
  auto reverse = [](std::size_t n_chunks, auto&& fn) {
    for (std::size_t i = n_chunks; i-- > 0;) fn(i);
  };
  for (std::size_t chunks : {1u, 2u, 5u, 64u}) {
    INFO("chunks " << chunks);
    std::vector<float> got(n_q * n, -1.0f), got2(n_q * n, -1.0f);
    kvq::kernels::scores_parallel(c, q.data(), n_q, hd, rows.data(), n, got.data(), n, chunks, pool);
    kvq::kernels::scores_parallel(c, q.data(), n_q, hd, rows.data(), n, got2.data(), n, chunks, reverse);
    REQUIRE(got == want);
    REQUIRE(got2 == want);

    std::vector<float> acc(n_q * hd, 1.0f);
    kvq::kernels::accumulate_parallel(c, w.data(), n_q, n, rows.data(), n, acc.data(), hd, chunks, pool);
    double mag = 0;
    for (float v : acc_want) mag = std::max(mag, double(std::fabs(v)));
    for (std::size_t i = 0; i < acc.size(); ++i) REQUIRE(std::fabs(acc[i] - acc_want[i]) <= 1e-5 * mag);
  }
  CHECK(kvq::kernels::rows_per_chunk(n, 5) % 8 == 0);
  CHECK_THROWS_AS(kvq::kernels::scores_parallel(c, q.data(), 2, 10, rows.data(), n, want.data(), n, 2, pool),
                  kvq::Error);
}
