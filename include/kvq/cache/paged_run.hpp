// The tiles of one segment of one KV head, in a list of pages.
//
// A segment grows at the back (new tokens, demoted tokens) and is consumed at
// the front (tokens leaving for an older tier); truncation and rollback undo
// the same moves. A run is therefore a deque of tiles over pages: `front` tile
// slots of the first page are already consumed, and the last page is filled
// up to front + size. Tiles never straddle pages, so every page is a run of
// whole tiles a kernel streams as is, and growth never moves a stored byte.
// Empty pages are returned at once, so a run holds at most the partly
// consumed first page and the partly filled last page beyond its payload.
//
// Pages may be shared with forks (page_pool.hpp): a write into a shared page
// (appending into the last, undoing into the first) copies that page first.
//
// Where page boundaries fall is a function of the tiles' positions alone:
// the tile whose token position is P (tile index P / G) sits in slot
// (P / G + phase) % per_page of its page. So two caches holding the same
// tokens -- one grown token by token, one restored from a snapshot, a fork --
// have the same pages, and attention over them runs the same kernel calls
// and gives the same bits. The cache gives its many runs (layers x heads x
// streams) different phases, so runs that grow in lockstep cross page
// boundaries at different appends: without that, every run of a model takes
// a fresh page (and its first-touch page faults) in the same decode step.
// The push functions take the tile index of the first new tile (used when
// the run is empty).
//
// RunCounts is the page arithmetic alone: the cache runs it without data to
// bound what an operation will allocate before it changes anything.
#pragma once

#include <kvq/cache/page_pool.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

namespace kvq::detail {

// Page bookkeeping of a run, without its bytes. The push functions return how
// many pages the real run allocates doing the same, at most: a page whose
// sharing is not known (one that became first or last by a pop) counts as shared.
struct RunCounts {
  std::size_t per_page = 1;  // tiles per page
  std::size_t phase = 0;     // slot of the first tile of an empty run
  std::size_t front = 0;     // consumed slots of the first page
  std::size_t size = 0;      // tiles held
  std::size_t pages = 0;
  bool first_shared = false, last_shared = false;

  std::size_t push_back(std::size_t m, std::size_t first_tile) {
    if (m == 0) return 0;
    if (size == 0) return fresh(m, first_tile);
    std::size_t n = 0;
    const std::size_t slot = (front + size) % per_page, room = slot == 0 ? 0 : per_page - slot;
    if (room > 0 && last_shared) {
      ++n;
      last_shared = false;
      if (pages == 1) first_shared = false;
    }
    if (m > room) {
      const std::size_t extra = (m - room + per_page - 1) / per_page;
      n += extra;
      pages += extra;
      last_shared = false;
    }
    size += m;
    return n;
  }
  std::size_t push_front(std::size_t m, std::size_t first_tile) {
    if (m == 0) return 0;
    if (size == 0) return fresh(m, first_tile);
    std::size_t n = 0;
    if (front > 0 && first_shared) {
      ++n;
      first_shared = false;
      if (pages == 1) last_shared = false;
    }
    if (m > front) {
      const std::size_t rest = m - front, extra = (rest + per_page - 1) / per_page;
      n += extra;
      pages += extra;
      front = extra * per_page - rest;
      first_shared = false;
    } else {
      front -= m;
    }
    size += m;
    return n;
  }
  void pop_front(std::size_t m) {
    size -= m;
    if (size == 0) return reset();
    front += m;
    if (front >= per_page) {
      pages -= front / per_page;
      front %= per_page;
      first_shared = true;
    }
  }
  void pop_back(std::size_t m) {
    size -= m;
    if (size == 0) return reset();
    const std::size_t keep = (front + size + per_page - 1) / per_page;
    if (keep < pages) {
      pages = keep;
      last_shared = true;
    }
  }

 private:
  std::size_t fresh(std::size_t m, std::size_t first_tile) {
    front = (first_tile + phase) % per_page;
    size = m;
    pages = (front + m + per_page - 1) / per_page;
    first_shared = last_shared = false;
    return pages;
  }
  void reset() {
    front = size = pages = 0;
    first_shared = last_shared = false;
  }
};

class PagedRun {
 public:
  // `per_page` tiles a page (default: as many as fit in kPageBytes); `phase`
  // is taken modulo per_page.
  PagedRun(PagePool& pool, std::size_t tile_bytes, std::size_t per_page = 0, std::size_t phase = 0)
      : pool_(&pool),
        tile_bytes_(tile_bytes),
        per_page_(per_page ? per_page : detail::tiles_per_page(tile_bytes)),
        phase_(phase % per_page_) {}
  PagedRun(const PagedRun&) = delete;
  PagedRun& operator=(const PagedRun&) = delete;
  PagedRun(PagedRun&& o) noexcept
      : pool_(o.pool_), tile_bytes_(o.tile_bytes_), per_page_(o.per_page_), phase_(o.phase_),
        pages_(std::move(o.pages_)), front_(o.front_), size_(o.size_) {
    o.pages_.clear();
    o.front_ = o.size_ = 0;
  }
  PagedRun& operator=(PagedRun&& o) noexcept {
    if (this != &o) {
      clear();
      pool_ = o.pool_;
      tile_bytes_ = o.tile_bytes_;
      per_page_ = o.per_page_;
      phase_ = o.phase_;
      pages_ = std::move(o.pages_);
      front_ = o.front_;
      size_ = o.size_;
      o.pages_.clear();
      o.front_ = o.size_ = 0;
    }
    return *this;
  }
  ~PagedRun() { clear(); }

  std::size_t size() const noexcept { return size_; }  // tiles
  std::size_t tile_bytes() const noexcept { return tile_bytes_; }
  std::size_t tiles_per_page() const noexcept { return per_page_; }
  std::size_t page_bytes() const noexcept { return per_page_ * tile_bytes_; }
  // Room for n page pointers, so growing to n pages never reallocates the table.
  void reserve_pages(std::size_t n) { pages_.reserve(n); }
  std::size_t n_pages() const noexcept { return pages_.size(); }
  std::byte* page(std::size_t i) const noexcept { return pages_[i]; }

  const std::byte* tile(std::size_t i) const noexcept {
    const std::size_t s = front_ + i;
    return pages_[s / per_page_] + (s % per_page_) * tile_bytes_;
  }

  // f(first tile, n_tiles) for every page in order.
  template <class F>
  void for_each_page(F&& f) const {
    std::size_t slot = front_, left = size_;
    for (std::size_t p = 0; left > 0; ++p) {
      const std::size_t n = std::min(per_page_ - slot, left);
      f(static_cast<const std::byte*>(pages_[p] + slot * tile_bytes_), n);
      left -= n;
      slot = 0;
    }
  }

  // Bookkeeping of an empty run of this shape.
  RunCounts empty_counts() const noexcept { return RunCounts{per_page_, phase_}; }
  RunCounts counts() const noexcept {
    RunCounts c{per_page_, phase_, front_, size_, pages_.size(), false, false};
    if (!pages_.empty()) {
      c.first_shared = PagePool::shared(pages_.front());
      c.last_shared = PagePool::shared(pages_.back());
    }
    return c;
  }

  // The slot of a new tile at the back (tile index `first_tile` if the run is empty).
  std::byte* push_back(Allowance& a, std::size_t first_tile) {
    if (size_ == 0) {
      drop_pages();
      pages_.push_back(a.new_page(page_bytes()));
      front_ = (first_tile + phase_) % per_page_;
    } else {
      const std::size_t slot = (front_ + size_) % per_page_;
      if (slot == 0) {
        pages_.push_back(a.new_page(page_bytes()));
      } else if (PagePool::shared(pages_.back())) {
        const std::size_t from = pages_.size() == 1 ? front_ : 0;
        unshare(pages_.size() - 1, from, slot, a);
      }
    }
    const std::size_t s = front_ + size_++;
    return pages_[s / per_page_] + (s % per_page_) * tile_bytes_;
  }
  void append(const std::byte* tiles, std::size_t n, Allowance& a, std::size_t first_tile) {
    for (std::size_t i = 0; i < n; ++i) std::memcpy(push_back(a, first_tile + i), tiles + i * tile_bytes_, tile_bytes_);
  }

  // n tiles before the first (rollback of a move out of this run).
  void push_front(const std::byte* tiles, std::size_t n, Allowance& a, std::size_t first_tile) {
    if (n == 0) return;
    if (size_ == 0) return append(tiles, n, a, first_tile);
    if (front_ > 0 && PagePool::shared(pages_.front()))
      unshare(0, front_, std::min(per_page_, front_ + size_), a);
    for (std::size_t i = n; i-- > 0;) {
      if (front_ == 0) {
        pages_.insert(pages_.begin(), a.new_page(page_bytes()));
        front_ = per_page_;
      }
      --front_;
      ++size_;
      std::memcpy(pages_.front() + front_ * tile_bytes_, tiles + i * tile_bytes_, tile_bytes_);
    }
  }

  void pop_front(std::size_t n) noexcept {
    size_ -= n;
    if (size_ == 0) return clear();
    front_ += n;
    const std::size_t drop = front_ / per_page_;
    for (std::size_t p = 0; p < drop; ++p) pool_->release(pages_[p]);
    pages_.erase(pages_.begin(), pages_.begin() + static_cast<std::ptrdiff_t>(drop));
    front_ %= per_page_;
  }
  void pop_back(std::size_t n) noexcept {
    size_ -= n;
    if (size_ == 0) return clear();
    const std::size_t keep = (front_ + size_ + per_page_ - 1) / per_page_;
    while (pages_.size() > keep) {
      pool_->release(pages_.back());
      pages_.pop_back();
    }
  }
  void clear() noexcept {
    drop_pages();
    front_ = size_ = 0;
  }

  // This run becomes a copy of `o` sharing all of its pages.
  void share(const PagedRun& o) noexcept {
    clear();
    for (std::byte* p : o.pages_) PagePool::retain(p);
    pages_ = o.pages_;
    front_ = o.front_;
    size_ = o.size_;
  }

 private:
  void drop_pages() noexcept {
    for (std::byte* p : pages_) pool_->release(p);
    pages_.clear();
  }
  // Replaces shared page i by a private copy of its slots [a, b).
  void unshare(std::size_t i, std::size_t a, std::size_t b, Allowance& al) {
    std::byte* copy = al.new_page(page_bytes());
    std::memcpy(copy + a * tile_bytes_, pages_[i] + a * tile_bytes_, (b - a) * tile_bytes_);
    pool_->release(pages_[i]);
    pages_[i] = copy;
  }

  PagePool* pool_;
  std::size_t tile_bytes_, per_page_, phase_;
  std::vector<std::byte*> pages_;
  std::size_t front_ = 0, size_ = 0;
};

}  // namespace kvq::detail
