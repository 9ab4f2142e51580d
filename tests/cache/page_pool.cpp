#include "support/cache_fixtures.hpp"

#include <kvq/cache/page_pool.hpp>

#include <cstring>

using kvq::Errc;
using kvq::detail::Allowance;
using kvq::detail::PagePool;

TEST_CASE("page pool: page sizes hold whole tiles, one tile at least", "[cache][pool]") {
  CHECK(kvq::detail::tiles_per_page(72) == 16384 / 72);  // q4_0 at head_dim 128: 227 tokens
  CHECK(kvq::detail::tiles_per_page(512) == 32);         // f32 at head_dim 128
  CHECK(kvq::detail::tiles_per_page(40000) == 1);        // a tile larger than a page gets its own
}

TEST_CASE("page pool: reservations never exceed the budget and return what they did not use", "[cache][pool]") {
  PagePool pool(100000);
  {
    Allowance a(pool, 40000, "test");
    CHECK(pool.committed() == 40000);
    std::byte* p = a.new_page(16384);
    std::memset(p, 1, 16384);
    CHECK(pool.live_pages() == 1);
    CHECK(pool.committed() == 40000);  // the page came out of the reservation
    // A second reservation beyond what is left is refused, naming the request.
    const auto err = kvq::test::error_code([&] { Allowance b(pool, 60001, "append"); });
    CHECK(err == Errc::budget_exceeded);
    CHECK(pool.committed() == 40000);
    PagePool::retain(p);
    CHECK(PagePool::shared(p));
    pool.release(p);
    CHECK(!PagePool::shared(p));
    CHECK(pool.committed() == 40000);  // still one reference
    pool.release(p);                   // the last: its bytes leave committed
    CHECK(pool.live_pages() == 0);
    CHECK(pool.committed() == 40000 - 16384);
  }
  CHECK(pool.committed() == 0);  // the unused part returned
  Allowance full(pool, 100000, "test");
  CHECK(pool.committed() == 100000);
}

TEST_CASE("page pool: an unlimited pool commits what is allocated", "[cache][pool]") {
  PagePool pool;
  std::byte* p = nullptr;
  {
    Allowance a(pool, 0, "test");
    p = a.new_page(1000);
    a.take(24);
  }
  CHECK(pool.committed() == 1024);
  pool.release(p);
  pool.unreserve(24);
  CHECK(pool.committed() == 0);
}
