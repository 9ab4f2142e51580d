// kvq::CachePool: many sequences of one model shape and cache spec on one
// byte budget, with copy-on-write forks and batched decode attention.
//
// A serving engine holds its in-flight requests' caches in one pre-sized
// budget, shares prompt prefixes between them (parallel sampling, beam
// search, a common system prompt) and attends a batch of them per layer.
// Every sequence is a kvq::Cache whose pages come from the pool's page pool
// (page_pool.hpp), so everything a Cache does -- append, attend, scores,
// accumulate, truncate, memory, snapshot/restore -- works on a sequence
// unchanged. The pool adds:
//   - the budget: committed bytes (pages, undo logs, in-flight reservations)
//     never exceed it. An append, truncate, fork or restore that would not
//     fit throws Errc::budget_exceeded before changing anything: that
//     sequence and every other one stay as they were. What to evict is the
//     engine's choice; bytes(id) says what each sequence holds and what
//     destroying it would free.
//   - fork(id): a new sequence sharing every page of `id` (O(pages)
//     bookkeeping; the rollback undo log, at most rollback_reserve appends'
//     moves, is copied). A page is copied only when one side writes into it,
//     so appends, truncation and tier demotions of either side never change
//     the other.
//   - attend(layer, ids, ...): decode attention of a batch of sequences of
//     one layer, tasks spread over sequences x KV heads.
//
// Thread contract: calls on different sequences may run concurrently on
// different threads (they share pages and the budget, both thread-safe),
// and so may const calls (attend, scores, accumulate, memory, bytes,
// snapshot_bytes, fork) on the same sequence; a non-const call on a sequence
// (append, truncate, clear, restore, destroy) must not overlap any other call
// on that sequence. create, fork and destroy may run concurrently with each
// other and with calls on other sequences. Budget checks are atomic: two appends racing
// for the last pages cannot both be admitted past the budget.
#pragma once

#include <kvq/cache/cache.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kvq {

// What one sequence holds, for eviction decisions.
struct SequenceBytes {
  std::size_t payload = 0;    // Cache::bytes_used(): tiles, exact tokens, undo log
  std::size_t capacity = 0;   // Cache::capacity_bytes(): whole pages (shared ones too) and the undo log
  std::size_t exclusive = 0;  // pages only this sequence references, and its undo log: what destroy() frees
  std::size_t shared = 0;     // pages also referenced by other sequences
};

class CachePool {
 public:
  using SequenceId = std::uint64_t;

  // `budget_bytes`: the most the pool's sequences may hold together.
  CachePool(ModelShape shape, CacheSpec spec, std::size_t budget_bytes, CodecFactory make = default_codec_factory)
      : prototype_(std::move(shape), std::move(spec), std::move(make),
                   std::make_shared<detail::PagePool>(budget_bytes)) {}
  CachePool(const CachePool&) = delete;
  CachePool& operator=(const CachePool&) = delete;

  const ModelShape& shape() const noexcept { return prototype_.shape(); }
  const CacheSpec& spec() const noexcept { return prototype_.spec(); }
  std::size_t budget() const noexcept { return pages().budget(); }
  // Bytes held by all sequences (and reserved by operations in flight).
  std::size_t committed() const { return pages().committed(); }
  std::size_t available() const { return budget() - committed(); }
  // Allocates and touches page memory now, up to `bytes` (at most the budget),
  // so that appends take pages from the pool without calling the allocator or
  // faulting memory in: no append pays for first-touch page faults (the first
  // compressed token of every stream and head otherwise takes its first page in
  // the same step). Free pages are not committed; cached_bytes() reports them.
  // Returns the bytes added.
  std::size_t preallocate(std::size_t bytes) {
    return pages().preallocate(std::min(bytes, budget())) * detail::kPageBytes;
  }
  std::size_t cached_bytes() const { return pages().cached_bytes(); }

  // A new empty sequence (no bytes until its first append).
  SequenceId create() {
    Cache c(prototype_.shape_, prototype_.spec_, prototype_.make_, prototype_.pool_);
    return insert(std::make_unique<Cache>(std::move(c)));
  }

  // A new sequence equal to `parent`, sharing its pages copy-on-write.
  SequenceId fork(SequenceId parent) { return insert(std::make_unique<Cache>(sequence(parent).fork())); }

  // Frees every page only this sequence references.
  void destroy(SequenceId id) {
    std::unique_ptr<Cache> dead;  // destroyed outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = seqs_.find(id);
      if (it == seqs_.end()) unknown(id, "destroy");
      dead = std::move(it->second);
      seqs_.erase(it);
    }
  }

  bool contains(SequenceId id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return seqs_.count(id) != 0;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seqs_.size();
  }
  std::vector<SequenceId> sequences() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<SequenceId> ids;
    for (const auto& [id, c] : seqs_) ids.push_back(id);
    return ids;
  }

  // The sequence itself: a Cache; the reference stays valid until destroy(id).
  Cache& sequence(SequenceId id) { return *find(id, "sequence"); }
  const Cache& sequence(SequenceId id) const { return *find(id, "sequence"); }

  SequenceBytes bytes(SequenceId id) const {
    const Cache& c = *find(id, "bytes");
    SequenceBytes b;
    b.payload = c.bytes_used();
    b.capacity = c.capacity_bytes();
    for (const auto& L : c.layers_) {
      b.exclusive += L.heavy.capacity();
      for (const detail::Stream* s : {&L.k, &L.v}) {
        b.exclusive += s->log_bytes();
        for (const auto& seg : s->data)
          for (const auto& run : seg)
            for (std::size_t p = 0; p < run.n_pages(); ++p)
              (detail::PagePool::shared(run.page(p)) ? b.shared : b.exclusive) += run.page_bytes();
      }
    }
    return b;
  }

  // Decode attention for the newest token of every sequence in `ids` on
  // `layer`: q[i] and out[i] are [n_q_heads][head_dim] for sequence ids[i].
  // Tasks (sequence x KV head) go to the caller's parallel_for (the contract
  // of Cache::attend); each equals Cache::attend of that sequence alone.
  template <class ParallelFor>
  void attend(std::size_t layer, std::span<const SequenceId> ids, const float* const* q, float* const* out,
              ParallelFor&& parallel_for, std::optional<float> scale = std::nullopt) const {
    detail::require(q != nullptr && out != nullptr, Errc::invalid_argument, "attend: q or out is null");
    const float s = scale.value_or(1.0f / std::sqrt(static_cast<float>(shape().head_dim)));
    detail::require(std::isfinite(s), Errc::invalid_argument, "attend: scale is not finite");
    const std::size_t o = prototype_.ordinal(layer, "attend");
    std::vector<const Cache*> caches;
    caches.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const Cache* c = find(ids[i], "attend");
      detail::require(q[i] != nullptr && out[i] != nullptr, Errc::invalid_argument, "attend: q[i] or out[i] is null");
      if (c->layers_[o].length == 0)
        detail::fail(Errc::invalid_argument, "attend: sequence " + std::to_string(ids[i]) + " is empty on layer " +
                                                 std::to_string(layer));
      caches.push_back(c);
    }
    std::vector<std::unique_ptr<const Cache::LayerPass>> passes;
    passes.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      passes.push_back(std::make_unique<const Cache::LayerPass>(*caches[i], caches[i]->layers_[o], 1, q[i], out[i], s));
    const std::size_t jobs = passes.empty() ? 0 : passes[0]->jobs(shape().n_kv_heads);
    // Heavy hitters: each sequence records the attention its query gave, as
    // its own attend would (one slice per job, summed after).
    std::vector<std::size_t> first(ids.size() + 1, 0);
    for (std::size_t i = 0; i < ids.size(); ++i) first[i + 1] = first[i] + jobs * passes[i]->heavy_floats();
    std::vector<float> mass(first.back());
    parallel_for(ids.size() * jobs, [&](std::size_t task) {
      const Cache::LayerPass& p = *passes[task / jobs];
      const std::size_t job = task % jobs, hf = p.heavy_floats();
      const detail::Partial part = p.run(job, 0, p.n, nullptr);
      p.write_out(job, part);
      if (hf) p.record(job, part, mass.data() + first[task / jobs] + job * hf);
    });
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (passes[i]->heavy_floats()) passes[i]->commit(jobs, mass.data() + first[i]);
  }
  void attend(std::size_t layer, std::span<const SequenceId> ids, const float* const* q, float* const* out,
              std::optional<float> scale = std::nullopt) const {
    attend(layer, ids, q, out, detail::SerialFor{}, scale);
  }

 private:
  detail::PagePool& pages() const noexcept { return *prototype_.pool_; }
  SequenceId insert(std::unique_ptr<Cache> c) {
    std::lock_guard<std::mutex> lock(mu_);
    const SequenceId id = next_++;
    seqs_.emplace(id, std::move(c));
    return id;
  }
  Cache* find(SequenceId id, const char* op) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = seqs_.find(id);
    if (it == seqs_.end()) unknown(id, op);
    return it->second.get();
  }
  [[noreturn]] static void unknown(SequenceId id, const char* op) {
    detail::fail(Errc::out_of_range, std::string(op) + ": no sequence " + std::to_string(id) + " in the pool");
  }

  Cache prototype_;  // empty; holds the shape, spec, codec factory and page pool
  mutable std::mutex mu_;
  std::map<SequenceId, std::unique_ptr<Cache>> seqs_;
  SequenceId next_ = 1;
};

}  // namespace kvq
