// Pages: the fixed-size blocks every stored tile lives in, and the byte
// budget they are taken from.
//
// A stream segment's tiles (per KV head) sit in a list of pages (paged_run.hpp)
// instead of one growing vector, so growth never copies what is stored. Pages
// are reference counted: a forked sequence shares every page of its parent and
// copies one only before writing into it (copy on write). Reference counts are
// atomic, so sequences sharing pages may be used on different threads.
//
// The budget: `committed` counts the bytes of live pages, of the rollback undo
// logs kept beside them, and of reservations. An operation first reserves an
// upper bound of what it may allocate (Allowance, refused with
// Errc::budget_exceeded before anything changes), allocates from that
// reservation, and returns what it did not use; freed pages leave `committed`
// at once. So committed never exceeds the budget, even in the middle of an
// operation, and an operation that would not fit fails before changing anything.
//
// Recycling: a freed page of the common size (more than half of kPageBytes:
// every page of a segment that grows past one page; the block is kPageBytes
// whatever whole tiles it holds) waits on a free
// list for the next new page, so a steady state (a window's ring of pages, a
// sequence destroyed and another created) stops calling the allocator and
// faulting fresh memory in; preallocate() fills that list up front with pages
// already touched (a pre-sized pool, as serving engines keep), so no append
// pays for first-touch page faults. Free pages are not committed: they are
// memory the pool holds, reported by cached_bytes(), at most
// max(what preallocate() asked for, kMinCachedPages pages).
#pragma once

#include <kvq/core/error.hpp>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define KVQ_PAGE_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVQ_PAGE_POOL_ASAN 1
#endif
#endif
#if defined(KVQ_PAGE_POOL_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace kvq::detail {

// Bytes of tiles a page holds at most (fewer when a tile does not divide it;
// one tile when a tile is larger; segments that never grow large, the sinks
// and the window, take pages of their largest size when that is smaller). 16 KiB: at least one 128-token K chunk of
// the fused pass for 4-bit codecs at head_dim 128 (227 q4_0 tokens), so a
// page boundary costs one extra kernel call per 1.8 chunks at most; four 4 KiB
// OS pages, so hardware prefetch streams across it; and small enough that the
// one partial page per segment and head stays ~1-3 % of a 32K cache.
inline constexpr std::size_t kPageBytes = 16 * 1024;

// Tiles larger than an eighth of a page (per-channel K: 128 tokens a tile,
// 4.2-8.3 KiB at head_dim 128) share pages of up to kLargePageBytes instead:
// one to three such tiles per 16 KiB page cost the fused pass a kernel call
// and a prefetch restart every few tiles (measured: pc4 and pc2 decode steps
// at 32K tokens 1.3x and 1.1x slower than over one contiguous run).
inline constexpr std::size_t kLargePageBytes = 64 * 1024;

// Tiles per page for a tile of `tile_bytes`.
inline std::size_t tiles_per_page(std::size_t tile_bytes) noexcept {
  if (tile_bytes <= kPageBytes / 8) return kPageBytes / tile_bytes;
  return tile_bytes >= kLargePageBytes ? 1 : kLargePageBytes / tile_bytes;
}

class PagePool {
 public:
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

  explicit PagePool(std::size_t budget = unlimited) : budget_(budget) {}
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;
  ~PagePool() {
    for (void* raw : free_) {
      poison(raw, false);
      ::operator delete(raw, std::align_val_t{kAlign});
    }
  }

  static constexpr std::size_t kMinCachedPages = 64;  // 1 MiB

  std::size_t budget() const noexcept { return budget_; }
  bool is_limited() const noexcept { return budget_ != unlimited; }
  // Live page and undo-log bytes plus outstanding reservations.
  std::size_t committed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return committed_;
  }
  std::size_t live_pages() const noexcept { return live_pages_.load(std::memory_order_relaxed); }

  // Adds `bytes` to committed if that stays within the budget.
  bool try_reserve(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes > budget_ - committed_) return false;
    committed_ += bytes;
    return true;
  }
  void unreserve(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    assert(bytes <= committed_);
    committed_ -= bytes;
  }

  // Free pages of kPageBytes the pool holds (not committed), and their bytes.
  std::size_t cached_pages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return free_.size();
  }
  std::size_t cached_bytes() const { return cached_pages() * (kHeader + kPageBytes); }

  // Allocates and touches pages of kPageBytes until `bytes` of them are free
  // (whole pages, rounded up), so that later new pages neither allocate nor
  // fault. Returns how many pages it added. Throws std::bad_alloc as new does.
  std::size_t preallocate(std::size_t bytes) {
    const std::size_t want = (bytes + kPageBytes - 1) / kPageBytes;
    std::size_t added = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cache_limit_ = std::max(cache_limit_, want);
      free_.reserve(cache_limit_);
      if (free_.size() >= want) return 0;
      added = want - free_.size();
    }
    for (std::size_t i = 0; i < added; ++i) {
      void* raw = ::operator new(kHeader + kPageBytes, std::align_val_t{kAlign});
      std::memset(raw, 0, kHeader + kPageBytes);  // fault it in now, not in an append
      poison(raw, true);
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(raw);
    }
    return added;
  }

  // A page of `bytes` with one reference; its bytes must already be reserved.
  std::byte* new_page(std::size_t bytes) {
    void* raw = recycled(bytes) ? take_free() : nullptr;
    if (raw == nullptr) raw = ::operator new(kHeader + block_bytes(bytes), std::align_val_t{kAlign});
    auto* h = ::new (raw) Header{};
    h->refs.store(1, std::memory_order_relaxed);
    h->bytes = bytes;
    live_pages_.fetch_add(1, std::memory_order_relaxed);
    return static_cast<std::byte*>(raw) + kHeader;
  }
  static void retain(std::byte* page) noexcept { header(page)->refs.fetch_add(1, std::memory_order_relaxed); }
  static bool shared(const std::byte* page) noexcept {
    return header(page)->refs.load(std::memory_order_acquire) > 1;
  }
  static std::uint32_t refs(const std::byte* page) noexcept {
    return header(page)->refs.load(std::memory_order_acquire);
  }
  static std::size_t page_bytes(const std::byte* page) noexcept { return header(page)->bytes; }
  // Drops a reference; the last one frees the page and its committed bytes.
  void release(std::byte* page) noexcept {
    Header* h = header(page);
    if (h->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const std::size_t bytes = h->bytes;
    h->~Header();
    live_pages_.fetch_sub(1, std::memory_order_relaxed);
    unreserve(bytes);
    if (recycled(bytes) && keep_free(h)) return;
    ::operator delete(static_cast<void*>(h), std::align_val_t{kAlign});
  }
  // An unlimited pool commits without reserving first.
  void commit_unreserved(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    committed_ += bytes;
  }

 private:
  struct Header {
    std::atomic<std::uint32_t> refs;
    std::size_t bytes;
  };
  static constexpr std::size_t kAlign = 64, kHeader = 64;  // tiles start on a cache line
  static Header* header(const std::byte* page) noexcept {
    return reinterpret_cast<Header*>(const_cast<std::byte*>(page) - kHeader);
  }

  // Pages of whole tiles fill a page to within one tile: such pages all take
  // blocks of kPageBytes, so any of them can reuse any other's block.
  static bool recycled(std::size_t bytes) noexcept { return bytes > kPageBytes / 2 && bytes <= kPageBytes; }
  static std::size_t block_bytes(std::size_t bytes) noexcept { return recycled(bytes) ? kPageBytes : bytes; }
  void* take_free() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return nullptr;
    void* raw = free_.back();
    free_.pop_back();
    poison(raw, false);
    return raw;
  }
  bool keep_free(void* raw) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() >= std::max(cache_limit_, kMinCachedPages)) return false;
    try {
      free_.push_back(raw);
    } catch (...) {  // no room for the pointer: free the page instead
      return false;
    }
    poison(raw, true);
    return true;
  }
  // Under AddressSanitizer a free page stays unaddressable until it is taken
  // again, so a stale pointer into a recycled page is still reported.
  static void poison([[maybe_unused]] void* raw, [[maybe_unused]] bool on) noexcept {
#if defined(KVQ_PAGE_POOL_ASAN)
    if (on) ASAN_POISON_MEMORY_REGION(raw, kHeader + kPageBytes);
    else ASAN_UNPOISON_MEMORY_REGION(raw, kHeader + kPageBytes);
#endif
  }

  std::size_t budget_;
  mutable std::mutex mu_;
  std::size_t committed_ = 0;
  std::atomic<std::size_t> live_pages_{0};
  std::vector<void*> free_;       // pages of kPageBytes, header included, LIFO (warm in cache)
  std::size_t cache_limit_ = 0;   // pages preallocate() asked for
};

// A reservation for one operation: taken in full up front (or refused), drawn
// from as pages and log bytes are allocated, the rest returned at the end.
class Allowance {
 public:
  // `what` names the operation in the error message.
  Allowance(PagePool& pool, std::size_t bytes, const char* what) : pool_(pool), left_(bytes) {
    if (!pool.is_limited()) return;
    if (!pool.try_reserve(bytes))
      fail(Errc::budget_exceeded, std::string(what) + ": needs up to " + std::to_string(bytes) +
                                      " bytes, the pool has " + std::to_string(pool.budget() - pool.committed()) +
                                      " of its budget " + std::to_string(pool.budget()) + " left");
  }
  Allowance(const Allowance&) = delete;
  Allowance& operator=(const Allowance&) = delete;
  ~Allowance() {
    if (pool_.is_limited()) pool_.unreserve(left_);
  }
  // An unlimited pool needs no bound: callers skip computing one.
  static bool needs_bound(const PagePool& pool) noexcept { return pool.is_limited(); }

  PagePool& pool() noexcept { return pool_; }
  std::byte* new_page(std::size_t bytes) {
    take(bytes);
    return pool_.new_page(bytes);
  }
  // Bytes kept beside the pages (undo logs): they stay committed until freed
  // with PagePool::unreserve.
  void give_back(std::size_t bytes) noexcept {
    if (!pool_.is_limited()) return pool_.unreserve(bytes);
    left_ += bytes;
  }
  void take(std::size_t bytes) {
    if (!pool_.is_limited()) return pool_.commit_unreserved(bytes);
    assert(bytes <= left_ && "an operation allocated more than its bound");
    left_ -= bytes;
  }

 private:
  PagePool& pool_;
  std::size_t left_;
};

}  // namespace kvq::detail
