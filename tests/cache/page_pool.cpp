#include "support/cache_fixtures.hpp"

#include <kvq/cache/page_pool.hpp>

#include <cstring>

using kvq::Errc;
using kvq::detail::Allowance;
using kvq::detail::PagePool;

TEST_CASE("page pool: page sizes hold whole tiles, one tile at least", "[cache][pool]") {
  CHECK(kvq::detail::tiles_per_page(72) == 16384 / 72);  // q4_0 at head_dim 128: 227 tokens
  CHECK(kvq::detail::tiles_per_page(512) == 32);         // f32 at head_dim 128
  CHECK(kvq::detail::tiles_per_page(8456) == 65536 / 8456);  // pc4 at head_dim 128: large tiles share 64 KiB pages
  CHECK(kvq::detail::tiles_per_page(2048) == 8);         // up to 2 KiB: 16 KiB pages
  CHECK(kvq::detail::tiles_per_page(2049) == 65536 / 2049);
  CHECK(kvq::detail::tiles_per_page(40000) == 1);        // a tile larger than half of that gets its own
  CHECK(kvq::detail::tiles_per_page(70000) == 1);
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

TEST_CASE("page pool: freed full-size pages are recycled, others freed; the cache is bounded", "[cache][pool]") {
  PagePool pool(1u << 30);
  constexpr std::size_t page = kvq::detail::kPageBytes;
  Allowance a(pool, 1u << 29, "test");
  std::byte* p = a.new_page(page);
  std::memset(p, 7, page);
  pool.release(p);
  CHECK(pool.cached_pages() == 1);
  CHECK(pool.live_pages() == 0);
  std::byte* q = a.new_page(page);  // the freed page again (LIFO), with a fresh reference
  CHECK(q == p);
  CHECK(pool.cached_pages() == 0);
  CHECK(PagePool::refs(q) == 1);
  CHECK(PagePool::page_bytes(q) == page);
  // A page of whole tiles short of kPageBytes shares the blocks (q4_0 at head_dim 128: 227 x 72).
  pool.release(q);
  std::byte* tiles = a.new_page(227 * 72);
  CHECK(tiles == p);
  CHECK(PagePool::page_bytes(tiles) == 227 * 72);
  q = tiles;
  // A small page (a few sink tokens) is not recycled.
  std::byte* small = a.new_page(1000);
  pool.release(small);
  CHECK(pool.cached_pages() == 0);
  pool.release(q);
  // Releasing many pages keeps at most kMinCachedPages of them.
  std::vector<std::byte*> pages;
  for (std::size_t i = 0; i < PagePool::kMinCachedPages + 10; ++i) pages.push_back(a.new_page(page));
  for (auto* x : pages) pool.release(x);
  CHECK(pool.cached_pages() == PagePool::kMinCachedPages);
  CHECK(pool.live_pages() == 0);
}

TEST_CASE("page pool: preallocate fills the free list with pages that new pages then take", "[cache][pool]") {
  PagePool pool(1u << 30);
  constexpr std::size_t page = kvq::detail::kPageBytes;
  const std::size_t want = 100 * page + 1;  // rounds up to 101 pages
  CHECK(pool.preallocate(want) == 101);
  CHECK(pool.cached_pages() == 101);
  CHECK(pool.committed() == 0);  // free pages are the pool's, not committed
  CHECK(pool.preallocate(want) == 0);  // already there
  Allowance a(pool, 200 * page, "test");
  std::vector<std::byte*> taken;
  for (int i = 0; i < 101; ++i) taken.push_back(a.new_page(page));
  CHECK(pool.cached_pages() == 0);
  CHECK(pool.live_pages() == 101);
  for (auto* x : taken) std::memset(x, 1, page);  // writable (and, under ASan, unpoisoned)
  // The limit preallocate asked for (101 > kMinCachedPages) holds the pages again.
  for (auto* x : taken) pool.release(x);
  CHECK(pool.cached_pages() == 101);
}
