#include "kvq_test.hpp"

#include <kvq/rotation/rotation.hpp>

#include <cmath>
#include <memory>
#include <thread>
#include <vector>

TEST_CASE("Rotation picks Hadamard for powers of two, dense otherwise", "[rotation]") {
  for (std::size_t d : {1u, 2u, 64u, 128u, 256u}) {
    const kvq::Rotation r(d, 5);
    CHECK(r.is_hadamard());
    CHECK(r.dim() == d);
    CHECK(r.seed() == 5u);
  }
  for (std::size_t d : {3u, 80u, 96u, 112u}) {
    const kvq::Rotation r(d, 6);
    CHECK_FALSE(r.is_hadamard());
    CHECK(r.dim() == d);
    CHECK(r.seed() == 6u);
  }
}

TEST_CASE("Rotation forwards to the implementation it holds", "[rotation]") {
  for (std::size_t d : {64u, 96u}) {
    INFO("dim " << d);
    const kvq::Rotation r(d, 9);
    kvq::Rng rng(1);
    std::vector<float> x(d), y(d), expect(d), z(d);
    for (auto& v : x) v = static_cast<float>(rng.normal());
    r.forward(x.data(), y.data());
    if (d == 64)
      kvq::RandomizedHadamard(d, 9).forward(x.data(), expect.data());
    else
      kvq::RandomOrthogonal(d, 9).forward(x.data(), expect.data());
    CHECK(y == expect);
    r.inverse(y.data(), z.data());
    double nx = 0.0, ny = 0.0, err = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
      nx += double(x[i]) * x[i];
      ny += double(y[i]) * y[i];
      err = std::max(err, double(std::abs(z[i] - x[i])));
    }
    CHECK(std::abs(std::sqrt(ny) - std::sqrt(nx)) < 1e-6 * std::sqrt(nx));
    CHECK(err < 1e-6 * std::sqrt(nx));
    // In place gives the same result.
    std::vector<float> buf = x;
    r.forward(buf.data(), buf.data());
    CHECK(buf == y);
  }
}

TEST_CASE("Rotation preserves dot products", "[rotation]") {
  // What turbo kernels rely on: q·k is computed in rotated space.
  for (std::size_t d : {128u, 112u}) {
    INFO("dim " << d);
    const kvq::Rotation r(d, 77);
    kvq::Rng rng(2);
    std::vector<float> a(d), b(d), ra(d), rb(d);
    for (auto& v : a) v = static_cast<float>(rng.normal());
    for (auto& v : b) v = static_cast<float>(rng.normal());
    r.forward(a.data(), ra.data());
    r.forward(b.data(), rb.data());
    double dot = 0.0, rdot = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
      dot += double(a[i]) * b[i];
      rdot += double(ra[i]) * rb[i];
    }
    CHECK(std::abs(dot - rdot) < 1e-4 * d);
  }
}

TEST_CASE("Rotation rejects dim 0", "[rotation]") {
  CHECK_THROWS_AS(kvq::Rotation(0, 1), kvq::Error);
}

TEST_CASE("Dense rotations of one (dim, seed) share one matrix while alive", "[rotation]") {
  const kvq::Rotation a(96, 11), b(96, 11), c(96, 12), d(80, 11);
  REQUIRE(a.dense() != nullptr);
  CHECK(a.dense() == b.dense());
  CHECK(a.dense() != c.dense());
  CHECK(a.dense() != d.dense());
  CHECK(a.dense()->matrix() == kvq::RandomOrthogonal(96, 11).matrix());
  CHECK(kvq::Rotation(64, 11).dense() == nullptr);
  // A copy shares too, and the matrix outlives the Rotation it came from.
  const kvq::Rotation* first = new kvq::Rotation(112, 3);
  const kvq::Rotation copy = *first;
  const std::vector<float> expect = first->dense()->matrix();
  delete first;
  CHECK(copy.dense()->matrix() == expect);
}

TEST_CASE("Concurrent first uses of a dense rotation build one matrix", "[rotation][threads]") {
  std::vector<std::unique_ptr<kvq::Rotation>> rs(4);
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < rs.size(); ++i) ts.emplace_back([&, i] { rs[i] = std::make_unique<kvq::Rotation>(208, 77); });
  for (auto& t : ts) t.join();
  for (const auto& r : rs) CHECK(r->dense() == rs[0]->dense());
}
