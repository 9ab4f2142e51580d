#include "kvq_test.hpp"

#include <kvq/cache/paged_run.hpp>
#include <kvq/core/rng.hpp>

#include <cstring>
#include <deque>
#include <vector>

using kvq::detail::Allowance;
using kvq::detail::PagedRun;
using kvq::detail::PagePool;
using kvq::detail::RunCounts;

namespace {

constexpr std::size_t kTile = 2000;  // 8 tiles per 16 KiB page

// The tiles, and the tile index (position) of the first: page cuts follow positions.
struct Model {
  std::deque<std::vector<std::byte>> tiles;
  std::size_t first = 0;
  std::size_t size() const { return tiles.size(); }
  bool empty() const { return tiles.empty(); }
};

std::vector<std::byte> make_tile(unsigned& next) {
  std::vector<std::byte> t(kTile);
  for (auto& b : t) b = static_cast<std::byte>(next++ * 2654435761u >> 24);
  return t;
}

void require_equal(const PagedRun& run, const Model& model, std::size_t phase) {
  REQUIRE(run.size() == model.size());
  for (std::size_t i = 0; i < model.size(); ++i) REQUIRE(std::memcmp(run.tile(i), model.tiles[i].data(), kTile) == 0);
  std::size_t i = 0;  // the page walk sees the same tiles in order, cut where the positions say
  run.for_each_page([&](const std::byte* tiles, std::size_t n) {
    if (i > 0) REQUIRE((model.first + i + phase) % run.tiles_per_page() == 0);
    for (std::size_t t = 0; t < n; ++t, ++i) REQUIRE(std::memcmp(tiles + t * kTile, model.tiles[i].data(), kTile) == 0);
  });
  REQUIRE(i == model.size());
  // Capacity: whole pages holding at most the partial first and last page.
  REQUIRE(run.n_pages() * run.tiles_per_page() < model.size() + 2 * run.tiles_per_page());
}

// One random operation on `run` and its model; checks the page bound the
// cache relies on: RunCounts says at least as many pages as are allocated.
void random_op(kvq::Rng& rng, PagePool& pool, PagedRun& run, Model& model, unsigned& next) {
  std::size_t before = pool.live_pages();
  RunCounts c = run.counts();
  std::size_t bound = 0;
  const unsigned op = static_cast<unsigned>(rng.next_u64() >> 32) % 5;
  const std::size_t m = 1 + static_cast<unsigned>(rng.next_u64() >> 32) % 7;
  Allowance a(pool, 0, "test");
  if (op <= 1) {
    bound = c.push_back(m, model.first + model.size());
    for (std::size_t i = 0; i < m; ++i) {
      model.tiles.push_back(make_tile(next));
      std::memcpy(run.push_back(a, model.first + model.size() - 1), model.tiles.back().data(), kTile);
    }
  } else if (op == 2 && !model.empty()) {
    // An undo: tiles return at the front.
    const std::size_t n = std::min(m, model.size());
    std::vector<std::byte> front;
    for (std::size_t i = 0; i < n; ++i) front.insert(front.end(), model.tiles[i].begin(), model.tiles[i].end());
    run.pop_front(n);
    before = pool.live_pages();
    c = run.counts();
    bound = c.push_front(n, model.first);
    run.push_front(front.data(), n, a, model.first);
  } else if (op == 3) {
    const std::size_t n = std::min(m, model.size());
    run.pop_front(n);
    model.tiles.erase(model.tiles.begin(), model.tiles.begin() + static_cast<std::ptrdiff_t>(n));
    model.first += n;
  } else {
    const std::size_t n = std::min(m, model.size());
    run.pop_back(n);
    model.tiles.resize(model.size() - n);
  }
  const std::size_t after = pool.live_pages();
  if (after > before) REQUIRE(after - before <= bound);
}

}  // namespace

TEST_CASE("paged run: contents survive growth, consumption, undo and truncation", "[cache][pool]") {
  PagePool pool;
  PagedRun run(pool, kTile, 0, 3);  // the first tile in slot 3 of the first page
  CHECK(run.tiles_per_page() == 8);
  Model model;
  kvq::Rng rng(7);
  unsigned next = 0;
  for (int i = 0; i < 3000; ++i) {
    random_op(rng, pool, run, model, next);
    require_equal(run, model, 3);
  }
  run.clear();
  CHECK(pool.live_pages() == 0);
  CHECK(pool.committed() == 0);
}

TEST_CASE("paged run: a shared run never changes when its copy is written", "[cache][pool]") {
  PagePool pool;
  kvq::Rng rng(11);
  unsigned next = 0;
  std::size_t shared_pages = 0;  // over all trials (a random history may leave a run empty)
  for (int trial = 0; trial < 40; ++trial) {
    PagedRun a(pool, kTile, 0, std::size_t(trial)), b(pool, kTile, 0, std::size_t(trial));
    Model ma, mb;
    for (int i = 0; i < 30; ++i) random_op(rng, pool, a, ma, next);
    b.share(a);
    mb = ma;
    shared_pages += pool.live_pages();
    require_equal(b, mb, std::size_t(trial) % a.tiles_per_page());
    for (int i = 0; i < 60; ++i) {
      // Either side changes; the other must stay as it was, byte for byte.
      if (static_cast<unsigned>(rng.next_u64() >> 32) % 2) random_op(rng, pool, a, ma, next);
      else random_op(rng, pool, b, mb, next);
      require_equal(a, ma, std::size_t(trial) % a.tiles_per_page());
      require_equal(b, mb, std::size_t(trial) % a.tiles_per_page());
    }
  }
  CHECK(shared_pages > 0);
  CHECK(pool.live_pages() == 0);
}
