#include "kvq_test.hpp"

#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstdint>

TEST_CASE("rng: deterministic per seed, different across seeds", "[core][rng]") {
  kvq::Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next_u64();
    REQUIRE(x == b.next_u64());
    differs |= x != c.next_u64();
  }
  CHECK(differs);
  // Pinned output: formats derive rotations from this stream, so it must never change.
  kvq::Rng pinned(0);
  CHECK(pinned.next_u64() == 0x99EC5F36CB75F2B4ull);
}

TEST_CASE("rng: uniform, sign and normal have the right moments", "[core][rng]") {
  kvq::Rng rng(1);
  const int n = 200000;
  double su = 0, ss = 0, sn = 0, sn2 = 0, sn4 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    su += u;
    ss += rng.sign();
    const double z = rng.normal();
    sn += z;
    sn2 += z * z;
    sn4 += z * z * z * z;
  }
  CHECK(std::fabs(su / n - 0.5) < 0.005);
  CHECK(std::fabs(ss / n) < 0.01);
  CHECK(std::fabs(sn / n) < 0.01);
  CHECK(std::fabs(sn2 / n - 1.0) < 0.02);
  CHECK(std::fabs(sn4 / n - 3.0) < 0.1);  // Gaussian kurtosis
}
