// kvq::Cache, the run-time configured compressed K/V cache, and
// kvq::KVCache<Policy, LayerSchedule, AgeSchedule>, its typed facade.
//
// Engines choose a configuration from a command line, so the core is built
// from a ModelShape and a CacheSpec; the typed facade builds the same spec
// from compile-time codec types. Per KV layer and KV head the K and V streams
// (stream.hpp) hold sinks, compressed tiers and an exact recent window, and
// attention runs segment by segment in each codec's working space, never on a
// decompressed copy of the cache. Segments are stored in pages (paged_run.hpp)
// from a page pool: a Cache owns one without a budget; the sequences of a
// CachePool (cache_pool.hpp) share one with a budget, and pages with forks.
//
// Input domain: finite K/V vectors whose Euclidean norm (per KV head) is at
// most 65504, fp16's largest finite value; that bound keeps every codec's fp16
// metadata finite. Every append is checked in full before anything is stored,
// so a refused call leaves the cache as it was.
#pragma once

#include <kvq/cache/attention.hpp>
#include <kvq/cache/fused_attention.hpp>
#include <kvq/cache/heavy_hitters.hpp>
#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/cache/page_pool.hpp>
#include <kvq/cache/policy.hpp>
#include <kvq/cache/stream.hpp>
#include <kvq/core/compiled.hpp>
#include <kvq/core/scratch.hpp>
#include <kvq/kernels/parallel.hpp>
#include <kvq/schedule/age_schedule.hpp>
#include <kvq/schedule/layer_schedule.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace kvq {

// One stretch of a stream for one KV head: `n_tokens` tokens from
// `first_position`, stored as whole tiles of `codec` in `bytes` -- one page,
// or all of segment `segment` when it fits in one.
struct SegmentView {
  const AnyCodec* codec = nullptr;
  std::size_t first_position = 0;
  std::size_t n_tokens = 0;
  std::span<const std::byte> bytes;
  std::size_t segment = 0;  // position order: sinks, tiers oldest first, policy tier, window
};

class CachePool;
namespace detail {
struct SnapshotIO;
}

class Cache {
 public:
  static constexpr float max_vector_norm = 65504.0f;

  // Member functions are defined below the class, out of line with
  // KVQ_EXTERN_KERNELS (core/compiled.hpp): a TU that uses a Cache then
  // compiles none of the streams, codecs or attention pass.
  Cache(ModelShape shape, CacheSpec spec, CodecFactory make = default_codec_factory);

  // A copy owns its bytes (fresh pages in the same page pool); fork() is the
  // cheap one.
  Cache(const Cache& o);
  Cache& operator=(const Cache& o);
  Cache(Cache&&) noexcept;
  // By swap: the old contents go with their page pool (a member-wise move
  // would drop the pool before the pages returning to it).
  Cache& operator=(Cache&& o) noexcept;
  ~Cache();

  // A copy sharing every page with this cache until either side writes into
  // it (copy on write: appends, demotions, rollbacks of one side never change
  // the other). Costs O(pages) bookkeeping and a copy of the undo log.
  Cache fork() const;

  const ModelShape& shape() const noexcept { return shape_; }
  const CacheSpec& spec() const noexcept { return spec_; }
  const CodecFactory& codec_factory() const noexcept { return make_; }

  // Tokens held by `layer` (a raw layer index, like every `layer` argument).
  std::size_t length(std::size_t layer) const;

  // One token: k and v are [n_kv_heads][head_dim].
  void append(std::size_t layer, const float* k, const float* v) { append(layer, 1, k, v); }

  // n tokens (prefill): k and v are [n][n_kv_heads][head_dim].
  void append(std::size_t layer, std::size_t n, const float* k, const float* v);

  // Decode attention for the newest token: q and out are [n_q_heads][head_dim].
  // Query head i reads KV head i / (n_q_heads / n_kv_heads); scores are scaled
  // by `scale` (default 1/sqrt(head_dim)) before the softmax.
  void attend(std::size_t layer, const float* q, float* out, std::optional<float> scale = std::nullopt) const {
    attend(layer, 1, q, out, scale);
  }

  // Prefill attention: the last n_pos tokens are the query positions, q and
  // out are [n_pos][n_q_heads][head_dim], causal. Keys are read in the state
  // after the batch append (older tokens of a long batch may already be
  // compressed), exactly as a decode step would read them.
  //
  // Both run the fused pass (fused_attention.hpp): per KV head and block of
  // up to 64 queries (a GQA group, or several prefill positions of it), K and
  // V are read once, tile by tile, with an online softmax. No heap allocation
  // once the calling thread has attended a shape this large before.
  //
  // With heavy=N in the spec, attend also records the long-range attention
  // each token draws and admits heavy hitters (heavy_hitters.hpp): it then
  // changes the layer's state, so calls on one layer must not overlap (calls
  // on different layers may).
  void attend(std::size_t layer, std::size_t n_pos, const float* q, float* out,
              std::optional<float> scale = std::nullopt) const;

  // The same on `n_threads` threads of the caller's parallel_for (called as
  // parallel_for(n_tasks, fn): fn(i) once for every i < n_tasks, any thread,
  // returning when all are done; kernels::ThreadPool is one). Work is split
  // over KV heads and query blocks and, when those are fewer than the threads,
  // over token ranges merged by log-sum-exp (flash-decoding). The result
  // equals the single-thread one within float rounding of the merge.
  template <class ParallelFor>
  void attend(std::size_t layer, std::size_t n_pos, const float* q, float* out, ParallelFor&& parallel_for,
              std::size_t n_threads, std::optional<float> scale = std::nullopt) const {
    const Layer& L = layers_[ordinal(layer, "attend")];
    const float s = attend_scale(L, layer, n_pos, q, out, scale);
    fused_attend(L, n_pos, q, out, s, parallel_for, std::max<std::size_t>(1, n_threads));
  }
  void attend(std::size_t layer, std::size_t n_pos, const float* q, float* out, kernels::ThreadPool& pool,
              std::optional<float> scale = std::nullopt) const;

  // Whether attend scores keys with int8-quantized queries (on by default):
  // uniform-format keys (q8_0, q4_0, q4_1, q3_1, q2_1), turbo keys (their
  // codebook rounded to int8 once per codec) and per-channel keys (the query
  // folded with the channel scales, quantized per tile), head_dim a multiple
  // of 32 (pc tiles of 64/128 tokens); other keys keep f32 queries. Each query
  // is rounded to int8 per block of 32 values and scored with integer dot
  // products. The score error bounds per format (uniform: sum_b (d_b / 2)
  // sum_j |k_j - m_b|, d_b the query block's step max|q|/127, m_b the key
  // block's minimum) are in reference/int8_query.hpp and docs/FORMATS.md.
  // Off, attend scores with f32 queries like kernels::scores. A run-time
  // setting of this object (not part of the spec, not saved in snapshots,
  // copied with it); do not change it while another thread attends.
  void set_int8_scores(bool on) noexcept { int8_scores_ = on; }
  bool int8_scores() const noexcept { return int8_scores_; }

  // How attend multiplies weights with values of the uniform formats (q8_0,
  // q4_0, q4_1, q3_1, q2_1; f32 by default): ValueProducts::bf16 rounds each
  // weight times a block's scale to bf16 (relative error <= 2^-8 per product,
  // codes exact; AVX512_BF16 CPUs only, elsewhere f32; GQA groups run on AMX
  // tiles where the CPU has them), ValueProducts::int8 to a multiple of 1/127
  // of the largest such product of 32 rows (AVX512-VNNI kernels only; turbo
  // values too). Contracts: kernels/dispatch.hpp, docs/FORMATS.md. A run-time
  // setting like set_int8_scores.
  void set_value_products(ValueProducts p) noexcept { value_products_ = p; }
  ValueProducts value_products() const noexcept { return value_products_; }

  // Raw scores q . k_t (unscaled) of query head q_head against every key of
  // `layer`: q is [head_dim], out is [length(layer)]. For engines running
  // their own softmax.
  void scores(std::size_t layer, std::size_t q_head, const float* q, float* out) const;

  // out = sum_t weights[t] v_t over every value of `layer` for query head
  // q_head: weights is [length(layer)], out is [head_dim].
  // Both read heavy hitters in their exact form; they record no attention
  // (only attend finds heavy hitters).
  void accumulate(std::size_t layer, std::size_t q_head, const float* weights, float* out) const;

  // The positions kept exact as heavy hitters for one KV head (spec heavy=N),
  // ascending.
  std::vector<std::size_t> heavy_positions(std::size_t layer, std::size_t kv_head) const;

  // Drops every token at position >= `position` in every layer (speculative
  // decoding rollback). Exact -- the cache is then bit-identical to one that
  // never held those tokens -- when position >= exact_rollback_floor(layer),
  // which is guaranteed for rollbacks of up to spec().rollback_reserve of the
  // newest tokens. Deeper rollbacks keep older tokens in the representation
  // they have (see docs/CACHE.md).
  //
  // In a CachePool a rollback can need pages (undone moves return tokens to
  // the pages they left); one that does not fit the budget fails with
  // Errc::budget_exceeded before changing anything.
  void truncate(std::size_t position);

  // The smallest position truncate() restores exactly on this layer.
  std::size_t exact_rollback_floor(std::size_t layer) const;

  void clear();

  // The stored stretches of one stream of one KV head, in position order: one
  // per page of every segment, and one empty view for an empty segment (so a
  // cache whose segments fit in one page each gives one view per segment).
  std::vector<SegmentView> segments(std::size_t layer, StreamKind kind, std::size_t kv_head) const;

  MemoryUse memory(std::size_t layer) const;
  MemoryReport memory() const;
  std::size_t bytes_used() const;
  std::size_t bytes_used(std::size_t layer) const;

  // Bytes allocated for what bytes_used() counts: whole pages (shared ones
  // included) and the undo log. Pages hold whole tiles, so this is the payload
  // plus, per segment and KV head, the unused part of a partly filled last
  // page and the consumed part of a partly consumed first page.
  std::size_t capacity_bytes() const noexcept;
  std::size_t capacity_bytes(std::size_t layer) const;

  void swap(Cache& other) noexcept;

 private:
  friend struct detail::SnapshotIO;
  friend class CachePool;

  // A cache taking its pages from `pool`.
  Cache(ModelShape shape, CacheSpec spec, CodecFactory make, std::shared_ptr<detail::PagePool> pool);

  // Becomes a copy of `o` (an empty cache of the same shape, spec and pool),
  // sharing its pages or with pages of its own.
  void copy_from(const Cache& o, bool share_pages);

  struct Layer {
    std::size_t length = 0;
    detail::Stream k, v;
    mutable detail::HeavyHitters heavy;  // attend records attention into it
  };

  std::size_t ordinal(std::size_t layer, const char* op) const;
  std::size_t kv_head_of(std::size_t q_head, const char* op) const;
  // attend's argument checks; the scale to use.
  float attend_scale(const Layer& L, std::size_t layer, std::size_t n_pos, const float* q, float* out,
                     std::optional<float> scale) const;

  void check_tokens(const char* what, const float* x, std::size_t n) const;

  // The runs of one stream and head (one per page) in position order, with
  // their segments' kernels.
  struct StreamRuns {
    std::vector<detail::TileRun> runs;
    std::vector<detail::RunKernels> kernels;
  };
  static void stream_runs(const detail::Stream& s, std::size_t head, const detail::RunKernels* seg_kernels,
                          StreamRuns& out);

  // One layer's fused pass for one call: the kernels of every segment (the
  // same for every head), and the jobs (KV head x block of up to
  // kMaxBlockQueries queries), each run over a token range into a Partial.
  struct LayerPass {
    const Layer& L;
    const float* q;
    float* out;
    float scale;
    std::size_t d, g, hq, n, n_pos, n_flat, n_blocks, max_k_tile = 1, max_v_tile = 1;
    detail::Scratch<detail::RunKernels, 16> kk, vk;
    detail::RunKernels heavy_k, heavy_v;  // the heavy hitters' exact codec

    LayerPass(const Cache& c, const Layer& layer, std::size_t n_pos_, const float* q_, float* out_, float scale_);
    std::size_t jobs(std::size_t n_kv_heads) const noexcept { return n_kv_heads * n_blocks; }
    std::size_t block_size(std::size_t b) const noexcept {
      return std::min(detail::kMaxBlockQueries, n_flat - b * detail::kMaxBlockQueries);
    }
    // Query i of block b of KV head h: position f / g, query head h * g + f % g.
    std::size_t offset(std::size_t h, std::size_t b, std::size_t i) const noexcept {
      const std::size_t f = b * detail::kMaxBlockQueries + i;
      return (f / g) * hq * d + (h * g + f % g) * d;
    }
    static constexpr std::size_t partial_floats = 2 * detail::kMaxBlockQueries;  // + kMaxBlockQueries * d
    static detail::Partial as_partial(float* p) noexcept {
      return detail::Partial{p, p + detail::kMaxBlockQueries, p + 2 * detail::kMaxBlockQueries};
    }
    // Runs job over [begin, end); p == nullptr: into the thread's own partial.
    detail::Partial run(std::size_t job, std::size_t begin, std::size_t end, float* p) const;
    void write_out(std::size_t job, const detail::Partial& p) const;
    // Heavy hitters: floats per job of long-range mass (candidates, members),
    // the mass job's queries gave (from its final partial), and the largest
    // of every job's into the layer's state, which then decides pending tokens.
    std::size_t heavy_floats() const noexcept;
    void record(std::size_t job, const detail::Partial& p, float* mass) const;
    void commit(std::size_t jobs, const float* mass) const;
  };
  // The token-range bounds of a multi-range pass (fused_attend).
  static void range_bounds(const Layer& L, const LayerPass& pass, std::size_t n_ranges, std::size_t* bounds);
  // Merges each job's ranges' partials and writes its output (and records
  // heavy-hitter mass into `mass` when not null).
  static void merge_ranges(const LayerPass& pass, std::size_t jobs, std::size_t n_ranges, float* partials,
                           float* mass);

  template <class ParallelFor>
  void fused_attend(const Layer& L, std::size_t n_pos, const float* q, float* out, float scale,
                    ParallelFor& parallel_for, std::size_t n_threads) const {
    using detail::kMaxBlockQueries;
    const LayerPass pass(*this, L, n_pos, q, out, scale);
    const std::size_t n = L.length, d = shape_.head_dim, jobs = pass.jobs(shape_.n_kv_heads);
    // Token ranges: one unless heads x blocks leave threads idle. Their
    // bounds are tile boundaries of both streams (the same for every head).
    std::size_t n_ranges = 1;
    if (n_threads > 1 && jobs < 2 * n_threads) n_ranges = std::min((2 * n_threads + jobs - 1) / jobs, std::max<std::size_t>(1, n / 4096));
    const std::size_t hf = pass.heavy_floats();
    thread_local std::vector<float> mass;  // this thread's: tasks on other threads get its address
    if (mass.size() < jobs * hf) mass.resize(jobs * hf);
    float* const mbase = mass.data();
    if (n_ranges == 1) {
      parallel_for(jobs, [&](std::size_t job) {
        const detail::Partial p = pass.run(job, 0, n, nullptr);
        pass.write_out(job, p);
        if (hf) pass.record(job, p, mbase + job * hf);
      });
      if (hf) pass.commit(jobs, mbase);
      return;
    }
    detail::Scratch<std::size_t, 65> bounds(n_ranges + 1);
    range_bounds(L, pass, n_ranges, bounds.data());
    // Partials (m, l: kMaxBlockQueries each; acc: kMaxBlockQueries x d), one
    // per job and range, merged here.
    const std::size_t per = LayerPass::partial_floats + kMaxBlockQueries * d;
    thread_local std::vector<float> shared;
    if (shared.size() < jobs * n_ranges * per) shared.resize(jobs * n_ranges * per);
    float* const sbase = shared.data();
    parallel_for(jobs * n_ranges, [&](std::size_t task) {
      const std::size_t job = task / n_ranges, r = task % n_ranges;
      pass.run(job, bounds.data()[r], bounds.data()[r + 1], sbase + task * per);
    });
    merge_ranges(pass, jobs, n_ranges, sbase, hf ? mbase : nullptr);
    if (hf) pass.commit(jobs, mbase);
  }

  // f(codec, first position, tiles, n_tiles, segment) for every page of one
  // stream and head, in position order.
  template <class F>
  static void for_each_run(const detail::Stream& s, std::size_t head, F&& f) {
    std::size_t first = 0;
    for (std::size_t j = 0; j < s.counts.size(); ++j) {
      const std::size_t g = s.layout.segment(j).tokens_per_tile;
      s.data[j][head].for_each_page([&](const std::byte* tiles, std::size_t nt) {
        f(s.codecs[j], first, tiles, nt, j);
        first += nt * g;
      });
    }
  }
  static std::size_t layer_capacity(const Layer& L) noexcept;
  MemoryUse layer_use(const Layer& L) const;

  ModelShape shape_;
  CacheSpec spec_;
  CodecFactory make_;
  std::shared_ptr<detail::PagePool> pool_;  // before layers_: their pages return to it
  std::vector<Layer> layers_;
  bool int8_scores_ = true;
  ValueProducts value_products_ = ValueProducts::f32;
};

#if KVQ_COMPILED_DEFINITIONS
KVQ_COMPILED_INLINE Cache::Cache(ModelShape shape, CacheSpec spec, CodecFactory make)
    : Cache(std::move(shape), std::move(spec), std::move(make), std::make_shared<detail::PagePool>()) {}

KVQ_COMPILED_INLINE Cache::Cache(const Cache& o) : Cache(o.shape_, o.spec_, o.make_, o.pool_) { copy_from(o, false); }

KVQ_COMPILED_INLINE Cache& Cache::operator=(const Cache& o) {
  if (this != &o) {
    Cache c(o);
    swap(c);
  }
  return *this;
}

KVQ_COMPILED_INLINE Cache::Cache(Cache&&) noexcept = default;

KVQ_COMPILED_INLINE Cache& Cache::operator=(Cache&& o) noexcept {
  Cache old(std::move(o));
  swap(old);
  return *this;
}

KVQ_COMPILED_INLINE Cache::~Cache() = default;

KVQ_COMPILED_INLINE Cache Cache::fork() const {
  Cache c(shape_, spec_, make_, pool_);
  c.copy_from(*this, true);
  return c;
}

KVQ_COMPILED_INLINE std::size_t Cache::length(std::size_t layer) const {
  return layers_[ordinal(layer, "length")].length;
}

KVQ_COMPILED_INLINE void Cache::append(std::size_t layer, std::size_t n, const float* k, const float* v) {
  Layer& L = layers_[ordinal(layer, "append")];
  if (n == 0) return;
  detail::require(k != nullptr && v != nullptr, Errc::invalid_argument, "append: k or v is null");
  detail::require(n <= shape_.max_context - L.length, Errc::out_of_range,
                  "append: " + std::to_string(n) + " tokens on layer " + std::to_string(layer) + " holding " +
                      std::to_string(L.length) + " exceed max_context " + std::to_string(shape_.max_context));
  check_tokens("k", k, n);
  check_tokens("v", v, n);
  const std::size_t bound = detail::Allowance::needs_bound(*pool_)
                                ? L.k.append_bound(L.length, n) + L.v.append_bound(L.length, n) + L.heavy.storage_need()
                                : 0;
  detail::Allowance a(*pool_, bound, "append");
  L.heavy.allocate(a);
  const std::size_t stride = shape_.n_kv_heads * shape_.head_dim;
  // Tokens leaving a window are judged as heavy hitters (heavy_hitters.hpp).
  struct Exit final : detail::WindowExit {
    detail::HeavyHitters& heavy;
    const detail::Stream& self;
    const detail::Stream& other;
    bool is_key;
    Exit(detail::HeavyHitters& h, const detail::Stream& s, const detail::Stream& o, bool k)
        : heavy(h), self(s), other(o), is_key(k) {}
    void left_window(std::size_t first, std::size_t count, std::size_t head, const float* x) override {
      heavy.left_window(self, other, is_key, first, count, head, x);
    }
  };
  Exit k_exit(L.heavy, L.k, L.v, true), v_exit(L.heavy, L.v, L.k, false);
  const bool heavy = L.heavy.enabled();
  for (std::size_t t = 0; t < n; ++t) {
    ++L.length;
    L.heavy.appended();
    L.k.append(k + t * stride, L.length, a, heavy ? &k_exit : nullptr);
    L.v.append(v + t * stride, L.length, a, heavy ? &v_exit : nullptr);
  }
}

KVQ_COMPILED_INLINE void Cache::attend(std::size_t layer, std::size_t n_pos, const float* q, float* out,
                                       std::optional<float> scale) const {
  attend(layer, n_pos, q, out, detail::SerialFor{}, 1, scale);
}

KVQ_COMPILED_INLINE void Cache::attend(std::size_t layer, std::size_t n_pos, const float* q, float* out,
                                       kernels::ThreadPool& pool, std::optional<float> scale) const {
  attend(layer, n_pos, q, out, pool, pool.size(), scale);
}

KVQ_COMPILED_INLINE float Cache::attend_scale(const Layer& L, std::size_t layer, std::size_t n_pos, const float* q,
                                              float* out, std::optional<float> scale) const {
  detail::require(q != nullptr && out != nullptr, Errc::invalid_argument, "attend: q or out is null");
  if (L.length == 0)
    detail::fail(Errc::invalid_argument,
                 "attend: layer " + std::to_string(layer) + " is empty (append K/V before attending)");
  if (n_pos == 0 || n_pos > L.length)
    detail::fail(Errc::out_of_range, "attend: n_pos " + std::to_string(n_pos) + " not in 1.." + std::to_string(L.length));
  const float s = scale.value_or(1.0f / std::sqrt(static_cast<float>(shape_.head_dim)));
  detail::require(std::isfinite(s), Errc::invalid_argument, "attend: scale is not finite");
  return s;
}

KVQ_COMPILED_INLINE void Cache::scores(std::size_t layer, std::size_t q_head, const float* q, float* out) const {
  const Layer& L = layers_[ordinal(layer, "scores")];
  const std::size_t h = kv_head_of(q_head, "scores");
  for_each_run(L.k, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt, std::size_t) {
    detail::segment_scores(c, q, 1, shape_.head_dim, tiles, nt, out + first, 0);
  });
  const detail::HeavyHitters& hh = L.heavy;
  for (std::size_t s = 0; s < hh.members(h); ++s)
    hh.codec().scores(q, hh.keys(h) + s * hh.tile_bytes(), out + hh.positions(h)[s]);  // exact: q needs no preparing
}

KVQ_COMPILED_INLINE void Cache::accumulate(std::size_t layer, std::size_t q_head, const float* weights,
                                           float* out) const {
  const Layer& L = layers_[ordinal(layer, "accumulate")];
  const std::size_t h = kv_head_of(q_head, "accumulate");
  std::fill(out, out + shape_.head_dim, 0.0f);
  const detail::HeavyHitters& hh = L.heavy;
  const float* w = weights;
  if (hh.members(h) > 0) {  // heavy hitters: their stored forms weigh nothing, their exact forms are added
    thread_local std::vector<float> masked;
    masked.assign(weights, weights + L.length);
    for (std::size_t s = 0; s < hh.members(h); ++s) masked[hh.positions(h)[s]] = 0.0f;
    w = masked.data();
  }
  for_each_run(L.v, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt, std::size_t) {
    detail::segment_accumulate(c, w + first, 1, 0, tiles, nt, out, 0);
  });
  for (std::size_t s = 0; s < hh.members(h); ++s)
    hh.codec().accumulate(out, weights + hh.positions(h)[s], hh.values(h) + s * hh.tile_bytes());
}

KVQ_COMPILED_INLINE std::vector<std::size_t> Cache::heavy_positions(std::size_t layer, std::size_t kv_head) const {
  const Layer& L = layers_[ordinal(layer, "heavy_positions")];
  detail::require(kv_head < shape_.n_kv_heads, Errc::out_of_range,
                  "heavy_positions: kv_head " + std::to_string(kv_head) + " >= n_kv_heads");
  const auto hidden = L.heavy.hidden(kv_head);
  return std::vector<std::size_t>(hidden.begin(), hidden.end());
}

KVQ_COMPILED_INLINE void Cache::truncate(std::size_t position) {
  std::size_t bound = 0;
  if (detail::Allowance::needs_bound(*pool_))
    for (const Layer& L : layers_)
      if (L.length > position) bound += L.k.truncate_bound(position) + L.v.truncate_bound(position);
  detail::Allowance a(*pool_, bound, "truncate");
  for (Layer& L : layers_) {
    if (L.length <= position) continue;
    L.k.truncate(position, a);
    L.v.truncate(position, a);
    L.heavy.truncate(position);
    L.length = position;
  }
}

KVQ_COMPILED_INLINE std::size_t Cache::exact_rollback_floor(std::size_t layer) const {
  const Layer& L = layers_[ordinal(layer, "exact_rollback_floor")];
  return std::max(L.k.floor, L.v.floor);
}

KVQ_COMPILED_INLINE void Cache::clear() {
  for (Layer& L : layers_) {
    L.length = 0;
    L.k.clear();
    L.v.clear();
    L.heavy.clear();
  }
}

KVQ_COMPILED_INLINE std::vector<SegmentView> Cache::segments(std::size_t layer, StreamKind kind,
                                                             std::size_t kv_head) const {
  const Layer& L = layers_[ordinal(layer, "segments")];
  detail::require(kv_head < shape_.n_kv_heads, Errc::out_of_range,
                  "segments: kv_head " + std::to_string(kv_head) + " >= n_kv_heads");
  const detail::Stream& s = kind == StreamKind::key ? L.k : L.v;
  std::vector<SegmentView> views;
  std::size_t first = 0;
  for (std::size_t j = 0; j < s.counts.size(); ++j) {
    const AnyCodec& c = s.codecs[j];
    if (s.counts[j] == 0) views.push_back({&c, first, 0, {}, j});
    s.data[j][kv_head].for_each_page([&](const std::byte* tiles, std::size_t nt) {
      views.push_back({&c, first, nt * c.tokens_per_tile(), {tiles, nt * c.bytes_per_tile()}, j});
      first += nt * c.tokens_per_tile();
    });
  }
  return views;
}

KVQ_COMPILED_INLINE MemoryUse Cache::memory(std::size_t layer) const {
  return layer_use(layers_[ordinal(layer, "memory")]);
}

KVQ_COMPILED_INLINE MemoryReport Cache::memory() const {
  MemoryReport r;
  for (const Layer& L : layers_) {
    r.layers.push_back(layer_use(L));
    r.total += r.layers.back();
  }
  return r;
}

KVQ_COMPILED_INLINE std::size_t Cache::bytes_used() const { return memory().total.total_bytes(); }
KVQ_COMPILED_INLINE std::size_t Cache::bytes_used(std::size_t layer) const { return memory(layer).total_bytes(); }

KVQ_COMPILED_INLINE std::size_t Cache::capacity_bytes() const noexcept {
  std::size_t b = 0;
  for (const Layer& L : layers_) b += layer_capacity(L);
  return b;
}

KVQ_COMPILED_INLINE std::size_t Cache::capacity_bytes(std::size_t layer) const {
  return layer_capacity(layers_[ordinal(layer, "capacity_bytes")]);
}

KVQ_COMPILED_INLINE void Cache::swap(Cache& other) noexcept {
  std::swap(shape_, other.shape_);
  std::swap(spec_, other.spec_);
  std::swap(make_, other.make_);
  std::swap(pool_, other.pool_);
  std::swap(layers_, other.layers_);
  std::swap(int8_scores_, other.int8_scores_);
  std::swap(value_products_, other.value_products_);
}

KVQ_COMPILED_INLINE Cache::Cache(ModelShape shape, CacheSpec spec, CodecFactory make,
                                 std::shared_ptr<detail::PagePool> pool)
    : shape_(std::move(shape)), spec_(std::move(spec)), make_(std::move(make)), pool_(std::move(pool)) {
  shape_.validate();
  spec_.validate(shape_);
  layers_.reserve(shape_.n_kv_layers());
  for (std::size_t o = 0; o < shape_.n_kv_layers(); ++o) {
    detail::Stream k(detail::stream_config(shape_, spec_, make_, o, StreamKind::key), shape_.n_kv_heads,
                     shape_.head_dim, spec_.rollback_reserve, *pool_, 2 * o, shape_.max_context);
    detail::Stream v(detail::stream_config(shape_, spec_, make_, o, StreamKind::value), shape_.n_kv_heads,
                     shape_.head_dim, spec_.rollback_reserve, *pool_, 2 * o + 1, shape_.max_context);
    const std::size_t max_move = std::max(k.layout.segment(k.layout.policy_segment()).tokens_per_tile,
                                          v.layout.segment(v.layout.policy_segment()).tokens_per_tile);
    detail::HeavyHitters heavy(spec_.heavy, shape_.n_kv_heads, k.codecs[k.layout.window_segment()],
                               detail::heavy_min_age(spec_.window), max_move, *pool_);
    layers_.push_back(Layer{0, std::move(k), std::move(v), std::move(heavy)});
  }
}

KVQ_COMPILED_INLINE void Cache::copy_from(const Cache& o, bool share_pages) {
  std::size_t bound = 0;
  for (const Layer& L : o.layers_)
    bound += L.k.copy_bound(share_pages) + L.v.copy_bound(share_pages) + L.heavy.capacity();
  detail::Allowance a(*pool_, bound, share_pages ? "fork" : "copy");
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    layers_[i].length = o.layers_[i].length;
    layers_[i].k.copy_from(o.layers_[i].k, share_pages, a);
    layers_[i].v.copy_from(o.layers_[i].v, share_pages, a);
    layers_[i].heavy.copy_from(o.layers_[i].heavy, a);
  }
  // The run-time settings travel with the copy or fork (documented above).
  int8_scores_ = o.int8_scores_;
  value_products_ = o.value_products_;
}

KVQ_COMPILED_INLINE std::size_t Cache::ordinal(std::size_t layer, const char* op) const {
  const long o = shape_.kv_ordinal(layer);
  if (o < 0) {
    if (layer >= shape_.n_layers)
      detail::fail(Errc::out_of_range, std::string(op) + ": layer " + std::to_string(layer) + " >= n_layers " +
                                           std::to_string(shape_.n_layers));
    detail::fail(Errc::out_of_range,
                 std::string(op) + ": layer " + std::to_string(layer) + " has no KV cache (not in kv_layers)");
  }
  return static_cast<std::size_t>(o);
}

KVQ_COMPILED_INLINE std::size_t Cache::kv_head_of(std::size_t q_head, const char* op) const {
  detail::require(q_head < shape_.n_q_heads, Errc::out_of_range,
                  std::string(op) + ": q_head " + std::to_string(q_head) + " >= n_q_heads " +
                      std::to_string(shape_.n_q_heads));
  return q_head / shape_.group_size();
}

KVQ_COMPILED_INLINE void Cache::check_tokens(const char* what, const float* x, std::size_t n) const {
  const std::size_t d = shape_.head_dim;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t h = 0; h < shape_.n_kv_heads; ++h) {
      const float* row = x + (t * shape_.n_kv_heads + h) * d;
      double sq = 0.0;
      for (std::size_t i = 0; i < d; ++i) {
        if (!std::isfinite(row[i]))
          detail::fail(Errc::non_finite, std::string("append: ") + what + "[token " + std::to_string(t) + "][head " +
                                             std::to_string(h) + "][" + std::to_string(i) + "] is not finite");
        sq += double(row[i]) * double(row[i]);
      }
      if (std::sqrt(sq) > max_vector_norm)
        detail::fail(Errc::out_of_range, std::string("append: ") + what + "[token " + std::to_string(t) + "][head " +
                                             std::to_string(h) + "] has norm " + std::to_string(std::sqrt(sq)) +
                                             " > 65504 (the cache's input domain)");
    }
}

KVQ_COMPILED_INLINE void Cache::stream_runs(const detail::Stream& s, std::size_t head,
                                            const detail::RunKernels* seg_kernels, StreamRuns& out) {
  out.runs.clear();
  out.kernels.clear();
  for_each_run(s, head, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt, std::size_t j) {
    out.runs.push_back({&c, first, tiles, nt, c.tokens_per_tile(), c.bytes_per_tile()});
    out.kernels.push_back(seg_kernels[j]);
  });
}

KVQ_COMPILED_INLINE Cache::LayerPass::LayerPass(const Cache& c, const Layer& layer, std::size_t n_pos_,
                                                const float* q_, float* out_, float scale_)
    : L(layer),
      q(q_),
      out(out_),
      scale(scale_),
      d(c.shape_.head_dim),
      g(c.shape_.group_size()),
      hq(c.shape_.n_q_heads),
      n(layer.length),
      n_pos(n_pos_),
      n_flat(n_pos_ * g),
      n_blocks((n_flat + detail::kMaxBlockQueries - 1) / detail::kMaxBlockQueries),
      kk(layer.k.counts.size()),
      vk(layer.v.counts.size()) {
  for (std::size_t j = 0; j < L.k.counts.size(); ++j) {
    kk.data()[j] = detail::resolve_kernels(L.k.codecs[j], c.int8_scores_);
    max_k_tile = std::max(max_k_tile, L.k.codecs[j].tokens_per_tile());
  }
  for (std::size_t j = 0; j < L.v.counts.size(); ++j) {
    vk.data()[j] = detail::resolve_kernels(L.v.codecs[j], false, c.value_products_);
    max_v_tile = std::max(max_v_tile, L.v.codecs[j].tokens_per_tile());
  }
  if (L.heavy.enabled()) {
    heavy_k = detail::resolve_kernels(L.heavy.codec());
    heavy_v = heavy_k;
  }
}

KVQ_COMPILED_INLINE detail::Partial Cache::LayerPass::run(std::size_t job, std::size_t begin, std::size_t end,
                                                          float* p) const {
  thread_local StreamRuns kr, vr;
  const std::size_t h = job / n_blocks, b = job % n_blocks, nq = block_size(b);
  const std::size_t per = partial_floats + detail::kMaxBlockQueries * d;
  detail::FusedWorkspace& ws = detail::thread_workspace();
  ws.reserve(detail::kMaxBlockQueries, d, max_k_tile, max_v_tile);
  if (ws.partial.size() < per) ws.partial.resize(per);
  const float* qs[detail::kMaxBlockQueries];
  std::uint32_t visible[detail::kMaxBlockQueries];
  for (std::size_t i = 0; i < nq; ++i) {
    qs[i] = q + offset(h, b, i);
    visible[i] = static_cast<std::uint32_t>(n - n_pos + (b * detail::kMaxBlockQueries + i) / g + 1);
  }
  stream_runs(L.k, h, kk.data(), kr);
  stream_runs(L.v, h, vk.data(), vr);
  const detail::QueryBlock qb{nq, qs, visible, scale};
  const detail::Partial part = as_partial(p ? p : ws.partial.data());
  const detail::HeavyHitters& hh = L.heavy;
  detail::Overlay ov;
  if (hh.members(h) > 0) {
    ov.hidden = hh.hidden(h);
    ov.codec = &hh.codec();
    ov.kk = heavy_k;
    ov.vk = heavy_v;
    ov.k_tiles = hh.keys(h);
    ov.v_tiles = hh.values(h);
    ov.positions = hh.positions(h);
    ov.n = hh.members(h);
  }
  detail::attend_range(kr.runs, kr.kernels, vr.runs, vr.kernels, d, qb, begin, end, ws, part, ov.n ? &ov : nullptr);
  return part;
}

KVQ_COMPILED_INLINE std::size_t Cache::LayerPass::heavy_floats() const noexcept {
  return L.heavy.enabled() ? (n - L.heavy.base()) + L.heavy.budget() : 0;
}

KVQ_COMPILED_INLINE void Cache::LayerPass::record(std::size_t job, const detail::Partial& p, float* mass) const {
  const detail::HeavyHitters& hh = L.heavy;
  const std::size_t h = job / n_blocks, b = job % n_blocks, nq = block_size(b);
  const std::size_t base = hh.base(), pend = hh.pend(), n_cand = n - base, n_mem = hh.members(h);
  const std::size_t cols = n_cand + n_mem, bt = hh.tile_bytes();
  thread_local std::vector<float> qbuf, sbuf;
  qbuf.resize(nq * d);
  sbuf.resize(nq * std::max<std::size_t>(cols, 1));
  for (std::size_t i = 0; i < nq; ++i) std::copy_n(q + offset(h, b, i), d, qbuf.data() + i * d);  // exact: no preparing
  float* const s = sbuf.data();
  const auto score = [&](const std::byte* tiles, std::size_t nt, std::size_t col) {
    heavy_k.scores(heavy_k.codec, qbuf.data(), nq, d, tiles, nt, s + col, cols);
  };
  // Candidates: pending ones from their slots, the others from the K window.
  // The pending slots are a ring: at most two runs of adjacent tiles.
  for (std::size_t pos = base; pos < pend;) {
    const std::size_t run = std::min(pend - pos, hh.pending_run(pos));
    score(hh.pending_key(h, pos), run, pos - base);
    pos += run;
  }
  const std::size_t w = L.k.layout.window_segment();
  std::size_t first = n - L.k.counts[w];
  L.k.data[w][h].for_each_page([&](const std::byte* tiles, std::size_t nt) {
    const std::size_t skip = pend > first ? std::min(pend - first, nt) : 0;
    if (skip < nt) score(tiles + skip * bt, nt - skip, first + skip - base);
    first += nt;
  });
  if (n_mem) score(hh.keys(h), n_mem, n_cand);
  // A token's mass from one position is the weight its group's query heads
  // give it, summed; it keeps the largest over positions.
  std::fill(mass, mass + n_cand + hh.budget(), 0.0f);
  thread_local std::vector<float> group;
  group.assign(cols, 0.0f);
  const std::size_t min_age = hh.min_age();
  for (std::size_t i = 0; i < nq; ++i) {
    const std::size_t f = b * detail::kMaxBlockQueries + i, qpos = n - n_pos + f / g;  // the query's own position
    const float m = p.m[i], inv = 1.0f / p.l[i];
    const float* row = s + i * cols;
    const auto add = [&](std::size_t col, std::size_t pos) {
      if (pos <= qpos && qpos - pos >= min_age) group[col] += std::exp(scale * row[col] - m) * inv;
    };
    for (std::size_t c = 0; c < n_cand; ++c) add(c, base + c);
    for (std::size_t j = 0; j < n_mem; ++j) add(n_cand + j, hh.positions(h)[j]);
    if (f % g == g - 1 || i + 1 == nq) {  // the position's last query head (of this block)
      for (std::size_t c = 0; c < cols; ++c) mass[c] = std::max(mass[c], group[c]);
      std::fill(group.begin(), group.end(), 0.0f);
    }
  }
}

KVQ_COMPILED_INLINE void Cache::LayerPass::commit(std::size_t jobs, const float* mass) const {
  detail::HeavyHitters& hh = L.heavy;
  const std::size_t hf = heavy_floats(), base = hh.base(), n_cand = n - base;
  for (std::size_t job = 0; job < jobs; ++job) {
    const std::size_t h = job / n_blocks;
    const float* m = mass + job * hf;
    for (std::size_t c = 0; c < n_cand; ++c) hh.candidate_mass(h, base + c) = std::max(hh.candidate_mass(h, base + c), m[c]);
    for (std::size_t j = 0; j < hh.members(h); ++j) hh.member_mass(h, j) = std::max(hh.member_mass(h, j), m[n_cand + j]);
  }
  hh.decide_pending();
}

KVQ_COMPILED_INLINE void Cache::LayerPass::write_out(std::size_t job, const detail::Partial& p) const {
  const std::size_t h = job / n_blocks, b = job % n_blocks, nq = block_size(b);
  for (std::size_t i = 0; i < nq; ++i) {
    float* o = out + offset(h, b, i);
    const float inv = 1.0f / p.l[i];
    for (std::size_t t = 0; t < d; ++t) o[t] = p.acc[i * d + t] * inv;
  }
}

KVQ_COMPILED_INLINE void Cache::range_bounds(const Layer& L, const LayerPass& pass, std::size_t n_ranges,
                                             std::size_t* bounds) {
  const std::size_t n = L.length;
  StreamRuns kr, vr;
  stream_runs(L.k, 0, pass.kk.data(), kr);
  stream_runs(L.v, 0, pass.vk.data(), vr);
  const std::span<const detail::TileRun> ks(kr.runs), vs(vr.runs);
  bounds[0] = 0;
  for (std::size_t r = 1; r < n_ranges; ++r)
    bounds[r] = std::max(bounds[r - 1], detail::common_boundary(ks, vs, r * n / n_ranges, n));
  bounds[n_ranges] = n;
}

KVQ_COMPILED_INLINE void Cache::merge_ranges(const LayerPass& pass, std::size_t jobs, std::size_t n_ranges,
                                             float* partials, float* mass) {
  const std::size_t per = LayerPass::partial_floats + detail::kMaxBlockQueries * pass.d;
  for (std::size_t job = 0; job < jobs; ++job) {
    const detail::Partial p = LayerPass::as_partial(partials + job * n_ranges * per);
    for (std::size_t r = 1; r < n_ranges; ++r)
      detail::merge_partials(p, LayerPass::as_partial(partials + (job * n_ranges + r) * per),
                             pass.block_size(job % pass.n_blocks), pass.d);
    pass.write_out(job, p);
    if (mass) pass.record(job, p, mass + job * pass.heavy_floats());
  }
}

KVQ_COMPILED_INLINE std::size_t Cache::layer_capacity(const Layer& L) noexcept {
  return L.k.page_capacity() + L.v.page_capacity() + L.k.log_bytes() + L.v.log_bytes() + L.heavy.capacity();
}

KVQ_COMPILED_INLINE MemoryUse Cache::layer_use(const Layer& L) const {
  MemoryUse u = detail::stream_use(L.k.layout, L.k.counts, L.k.log_bytes(), shape_.n_kv_heads, shape_.head_dim);
  u += detail::stream_use(L.v.layout, L.v.counts, L.v.log_bytes(), shape_.n_kv_heads, shape_.head_dim);
  u.heavy_bytes = L.heavy.bytes_used();
  u.tokens = L.length;
  return u;
}
#endif  // KVQ_COMPILED_DEFINITIONS

namespace detail {
template <class... Cs>
std::optional<AnyCodec> make_listed(CodecList<Cs...>, std::string_view name, std::size_t head_dim) {
  std::optional<AnyCodec> c;
  ((!c && Cs::name == name ? (c.emplace(Cs(head_dim)), 0) : 0), ...);
  return c;
}
}  // namespace detail

// The typed facade: Policy's codecs everywhere the schedules do not say
// otherwise. Codec types named by the policies are built directly (they need
// not be in the registry); other names go to the registry.
template <class P, class LayerSchedule = UniformLayers, class AgeSchedule = NoWindow>
class KVCache : public Cache {
 public:
  using policy = P;
  using layer_schedule = LayerSchedule;
  using age_schedule = AgeSchedule;

  explicit KVCache(const ModelShape& shape, LayerSchedule layers = {}, AgeSchedule age = {},
                   std::size_t rollback_reserve = 0)
      : Cache(shape, make_spec(layers, age, rollback_reserve), &make) {}

  static CacheSpec make_spec(const LayerSchedule& layers, const AgeSchedule& age, std::size_t rollback_reserve) {
    CacheSpec spec;
    spec.codecs = {std::string(P::key_codec::name), std::string(P::value_codec::name)};
    layers.apply(spec);
    age.apply(spec);
    spec.rollback_reserve = rollback_reserve;
    return spec;
  }

  static AnyCodec make(std::string_view name, std::size_t head_dim) {
    using Listed = decltype(detail::concat(
        detail::concat(detail::CodecList<typename P::key_codec, typename P::value_codec>{},
                       typename LayerSchedule::codecs{}),
        typename AgeSchedule::codecs{}));
    if (auto c = detail::make_listed(Listed{}, name, head_dim)) return *c;
    return default_codec_factory(name, head_dim);
  }
};

}  // namespace kvq
