// The storage of one K or V stream of one KV layer (all its KV heads), and the
// token-count rules that decide when tokens change representation.
//
// A stream is a sequence of *segments* in position order:
//   0        sinks        the first `sinks` tokens, exact
//   1..T-1   lower tiers  oldest (cheapest codec) first
//   T        policy tier  the layer's codec, newest compressed tokens
//   T+1      window       the newest tokens, exact
// Every segment is a run of whole tiles of its codec (exact storage is a
// 1-token-per-tile codec) per KV head, kept in pages (paged_run.hpp) that a
// kernel streams one after the other. K and V are separate streams because
// their codecs and tile sizes differ.
//
// Tokens enter the window (or the sinks, until they are full), leave the
// window into the policy tier in whole tiles once the window holds W + G
// tokens (so a tile codec's effective window is W..W+G-1 tokens), and move
// from tier j to the older tier j-1 in units of lcm(G_j, G_{j-1}) once the
// newest token of the unit has `after` newer tokens. These rules depend only
// on token counts (StreamLayout), so the memory planner runs the very same
// rules without data. Every move is recorded in an undo log holding the moved
// tokens' previous bytes for the newest `rollback_reserve` appends, which is
// what makes speculative-decoding rollback exact.
//
// Every operation that allocates takes an Allowance (page_pool.hpp); the
// *_bound functions run the same count rules and page arithmetic without data
// to say how many bytes that allowance must hold.
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/exact_codec.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/cache/paged_run.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/core/compiled.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <numeric>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace kvq {

// Builds a codec by name for a head_dim; the typed KVCache supplies one that
// also knows its own compile-time codec types.
using CodecFactory = std::function<AnyCodec(std::string_view name, std::size_t head_dim)>;

// The registry plus the exact formats "f32" and "f16". Out of line with
// KVQ_EXTERN_KERNELS (core/compiled.hpp), as the registry is.
AnyCodec default_codec_factory(std::string_view name, std::size_t head_dim);
#if KVQ_COMPILED_DEFINITIONS
KVQ_COMPILED_INLINE AnyCodec default_codec_factory(std::string_view name, std::size_t head_dim) {
  if (name == ExactF32::name) return AnyCodec(ExactF32(head_dim));
  if (name == ExactF16::name) return AnyCodec(ExactF16(head_dim));
  return make_codec(name, head_dim);
}
#endif

enum class StreamKind { key, value };

namespace detail {

struct SegmentShape {
  std::size_t tokens_per_tile = 1;
  std::size_t bytes_per_tile = 0;  // per KV head
};

// A move of n_tokens from the front of segment `from` to the back of `from - 1`.
struct Transition {
  std::size_t from = 0;
  std::size_t n_tokens = 0;
};

// The count rules of a stream (see the header comment).
class StreamLayout {
 public:
  StreamLayout() = default;
  // `segments` in position order (sinks, tiers oldest first, policy, window);
  // demote_after[j] (1 <= j < T) = age at which tokens move from j+1 into j.
  StreamLayout(std::vector<SegmentShape> segments, std::size_t sinks, std::size_t window,
               std::vector<std::size_t> demote_after)
      : segs_(std::move(segments)), sinks_(sinks), window_(window), after_(std::move(demote_after)) {}

  std::size_t n_segments() const noexcept { return segs_.size(); }
  std::size_t window_segment() const noexcept { return segs_.size() - 1; }
  // Tokens segment j can ever hold in a context of `context` tokens: the
  // sinks, the window plus the policy tile in transit, or all of them.
  std::size_t most_tokens(std::size_t j, std::size_t context) const noexcept {
    if (j == 0) return std::min(context, sinks_);
    if (j == window_segment()) return std::min(context, window_ + segs_[policy_segment()].tokens_per_tile);
    return context;
  }
  std::size_t policy_segment() const noexcept { return segs_.size() - 2; }
  const SegmentShape& segment(std::size_t j) const noexcept { return segs_[j]; }
  bool is_exact(std::size_t j) const noexcept { return j == 0 || j == window_segment(); }

  std::size_t entry_segment(const std::vector<std::size_t>& counts) const noexcept {
    return counts[0] < sinks_ ? 0 : window_segment();
  }

  std::optional<Transition> next(const std::vector<std::size_t>& counts, std::size_t length) const {
    const std::size_t w = window_segment(), p = policy_segment();
    if (counts[w] >= window_ + segs_[p].tokens_per_tile) return Transition{w, segs_[p].tokens_per_tile};
    std::size_t front = 0;
    for (std::size_t j = 0; j < p; ++j) front += counts[j];
    for (std::size_t j = p; j >= 2; --j) {  // newest tier first
      const std::size_t u = std::lcm(segs_[j].tokens_per_tile, segs_[j - 1].tokens_per_tile);
      if (counts[j] >= u && length >= front + u + after_[j - 1]) return Transition{j, u};
      front -= counts[j - 1];
    }
    return std::nullopt;
  }

  // Tiles per page of segment j: a full page, or what the sinks and the window
  // hold at most (a 4-token sink segment does not take a 16 KiB page).
  std::size_t tiles_per_page(std::size_t j) const noexcept {
    const std::size_t full = detail::tiles_per_page(segs_[j].bytes_per_tile);
    std::size_t most = full;
    if (j == 0) most = sinks_;
    else if (j == window_segment()) most = window_ + segs_[policy_segment()].tokens_per_tile;
    return std::clamp<std::size_t>(most, 1, full);
  }

  // Bytes per head a segment's `n` tokens occupy (n a multiple of its tile).
  std::size_t bytes_of(std::size_t j, std::size_t n) const noexcept {
    return n / segs_[j].tokens_per_tile * segs_[j].bytes_per_tile;
  }

 private:
  std::vector<SegmentShape> segs_;
  std::size_t sinks_ = 0, window_ = 0;
  std::vector<std::size_t> after_;
};

// The codecs of a stream's segments, in position order, and its layout.
struct StreamConfig {
  std::vector<AnyCodec> codecs;
  StreamLayout layout;
};

inline StreamConfig stream_config(const ModelShape& shape, const CacheSpec& spec, const CodecFactory& make,
                                  std::size_t kv_ordinal, StreamKind kind) {
  auto pick = [&](const CodecPair& p) -> const std::string& { return kind == StreamKind::key ? p.k : p.v; };
  const std::string exact(spec.window_precision == WindowPrecision::f16 ? ExactF16::name : ExactF32::name);
  StreamConfig c;
  c.codecs.push_back(make(exact, shape.head_dim));
  for (std::size_t i = spec.tiers.size(); i-- > 0;) c.codecs.push_back(make(pick(spec.tiers[i].codecs), shape.head_dim));
  c.codecs.push_back(make(pick(spec.layer_codecs(shape, kv_ordinal)), shape.head_dim));
  c.codecs.push_back(make(exact, shape.head_dim));
  std::vector<SegmentShape> segs;
  for (const auto& codec : c.codecs) {
    detail::require(codec.head_dim() == shape.head_dim, Errc::shape_mismatch,
                    "codec '" + std::string(codec.name()) + "' was built for head_dim " +
                        std::to_string(codec.head_dim()) + ", the model has " + std::to_string(shape.head_dim));
    detail::require(codec.tokens_per_tile() > 0 && codec.bytes_per_tile() > 0, Errc::invalid_argument,
                    "codec '" + std::string(codec.name()) + "' has an empty tile");
    segs.push_back({codec.tokens_per_tile(), codec.bytes_per_tile()});
  }
  // Tier spec i sits at segment T-1-i; demote_after[j] is the age at which
  // tokens enter segment j from j+1.
  const std::size_t T = segs.size() - 2;
  std::vector<std::size_t> after(segs.size(), 0);
  for (std::size_t i = 0; i < spec.tiers.size(); ++i) after[T - 1 - i] = spec.tiers[i].after_tokens;
  c.layout = StreamLayout(std::move(segs), spec.sinks, spec.window, std::move(after));
  return c;
}

// A decoded vector may overshoot the cache's input domain (norm <= 65504) by
// a rounding step; scaling it back keeps the next codec's fp16 metadata
// (scales, minimums, norms) finite, so a demotion can never fail half-way.
inline void clamp_to_domain(float* x, std::size_t n_tokens, std::size_t head_dim) {
  for (std::size_t t = 0; t < n_tokens; ++t) {
    float* row = x + t * head_dim;
    double sq = 0.0;
    for (std::size_t i = 0; i < head_dim; ++i) sq += double(row[i]) * double(row[i]);
    if (sq > 65504.0 * 65504.0) {
      const float f = static_cast<float>(65504.0 / std::sqrt(sq) * (1.0 - 1e-6));
      for (std::size_t i = 0; i < head_dim; ++i) row[i] *= f;
    }
  }
}

// Told of tokens leaving a stream's exact window, with their exact values
// (heavy_hitters.hpp judges them then).
struct WindowExit {
  virtual void left_window(std::size_t first, std::size_t n, std::size_t head, const float* x) = 0;

 protected:
  ~WindowExit() = default;
};

// One entry of the undo log: the previous bytes (per head) of a transition.
struct SnapshotIO;

struct UndoEntry {
  std::size_t trigger = 0;  // stream length right after the append that caused it
  std::size_t from = 0;
  std::size_t n_tokens = 0;
  std::vector<std::vector<std::byte>> bytes;  // [head]: the tokens as stored in `from`
};

// The undo log's bytes, committed in the page pool while they are held.
class LogBytes {
 public:
  explicit LogBytes(PagePool& pool) : pool_(&pool) {}
  LogBytes(LogBytes&& o) noexcept : pool_(o.pool_), bytes_(std::exchange(o.bytes_, 0)) {}
  LogBytes& operator=(LogBytes&& o) noexcept {
    if (this != &o) {
      release();
      pool_ = o.pool_;
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~LogBytes() { release(); }
  std::size_t bytes() const noexcept { return bytes_; }
  void add(std::size_t n, Allowance& a) {
    a.take(n);
    bytes_ += n;
  }
  // Freed during an operation: back to its allowance, so its bound may count
  // the log's net growth.
  void remove(std::size_t n, Allowance& a) noexcept {
    bytes_ -= n;
    a.give_back(n);
  }
  void release() noexcept {
    if (bytes_) pool_->unreserve(bytes_);
    bytes_ = 0;
  }

 private:
  PagePool* pool_;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  // `stagger`: distinct for the streams of a cache, so their runs cross page
  // boundaries at different appends (paged_run.hpp).
  // `max_tokens` (the model's context, 0: unknown) sizes every run's page
  // table once: grown by doubling, the tables of all runs of a cache would
  // reallocate in the same append (they reach 32, 64, ... pages together), a
  // ~3 ms step after a large free (kvq_bench_append, docs/CACHE.md).
  Stream(StreamConfig config, std::size_t n_heads, std::size_t head_dim, std::size_t reserve, PagePool& pool,
         std::size_t stagger = 0, std::size_t max_tokens = 0)
      : codecs(std::move(config.codecs)),
        layout(std::move(config.layout)),
        n_heads(n_heads),
        head_dim(head_dim),
        reserve(reserve),
        counts(layout.n_segments(), 0),
        log_bytes_(pool) {
    data.resize(layout.n_segments());
    for (std::size_t j = 0; j < layout.n_segments(); ++j)
      for (std::size_t h = 0; h < n_heads; ++h) {
        // Spread over the page by a multiplicative hash of (stream, head,
        // segment); the sinks fill once, at the start, and waste nothing.
        const std::size_t phase = j == 0 ? 0 : ((stagger * n_heads + h) * 8 + j) * 2654435761u >> 8;
        data[j].emplace_back(pool, layout.segment(j).bytes_per_tile, layout.tiles_per_page(j), phase);
        if (max_tokens) {
          const std::size_t page_tokens = layout.tiles_per_page(j) * layout.segment(j).tokens_per_tile;
          data[j].back().reserve_pages(layout.most_tokens(j, max_tokens) / page_tokens + 2);
        }
      }
  }

  std::size_t length() const noexcept { return std::accumulate(counts.begin(), counts.end(), std::size_t{0}); }

  // One token, x = [n_heads][head_dim], already validated; `length` counts it.
  void append(const float* x, std::size_t length, Allowance& a, WindowExit* exit = nullptr) {
    const std::size_t seg = layout.entry_segment(counts);
    const std::size_t ft = first_tile(seg);
    for (std::size_t h = 0; h < n_heads; ++h) codecs[seg].encode_tile(x + h * head_dim, data[seg][h].push_back(a, ft));
    ++counts[seg];
    while (auto t = layout.next(counts, length)) move(*t, length, a, exit);
    while (!log.empty() && log.front().trigger + reserve <= length) {
      floor = std::max(floor, log.front().trigger);
      log_bytes_.remove(entry_bytes(log.front()), a);
      log.pop_front();
    }
  }

  void move(const Transition& t, std::size_t length, Allowance& a, WindowExit* exit = nullptr) {
    const std::size_t from = t.from, to = from - 1, n = t.n_tokens;
    const std::size_t gf = layout.segment(from).tokens_per_tile, gt = layout.segment(to).tokens_per_tile;
    const std::size_t bf = layout.segment(from).bytes_per_tile;
    UndoEntry entry{length, from, n, {}};
    std::vector<float>& values = scratch;
    values.resize(n * head_dim);
    const std::size_t ft = first_tile(to);
    const std::size_t first = first_position(from);
    for (std::size_t h = 0; h < n_heads; ++h) {
      const PagedRun& src = data[from][h];
      for (std::size_t i = 0; i < n / gf; ++i) codecs[from].decode_tile(src.tile(i), values.data() + i * gf * head_dim);
      clamp_to_domain(values.data(), n, head_dim);
      if (exit && from == layout.window_segment()) exit->left_window(first, n, h, values.data());
      for (std::size_t i = 0; i < n / gt; ++i)
        codecs[to].encode_tile(values.data() + i * gt * head_dim, data[to][h].push_back(a, ft + i));
      if (reserve) {
        auto& b = entry.bytes.emplace_back(n / gf * bf);
        for (std::size_t i = 0; i < n / gf; ++i) std::memcpy(b.data() + i * bf, src.tile(i), bf);
      }
      data[from][h].pop_front(n / gf);
    }
    counts[from] -= n;
    counts[to] += n;
    if (reserve) {
      log_bytes_.add(entry_bytes(entry), a);
      log.push_back(std::move(entry));
    } else {
      floor = std::max(floor, length);
    }
  }

  void undo(const UndoEntry& e, Allowance& a) {
    const std::size_t to = e.from - 1;
    const std::size_t gf = layout.segment(e.from).tokens_per_tile, gt = layout.segment(to).tokens_per_tile;
    const std::size_t ft = (first_position(e.from) - e.n_tokens) / gf;  // where the tokens return
    for (std::size_t h = 0; h < n_heads; ++h) {
      data[to][h].pop_back(e.n_tokens / gt);
      data[e.from][h].push_front(e.bytes[h].data(), e.n_tokens / gf, a, ft);
    }
    counts[to] -= e.n_tokens;
    counts[e.from] += e.n_tokens;
  }

  // Keeps positions < p. Exact (the state the stream had at length p) when
  // p >= floor; otherwise tokens keep the representation they have, and a tile
  // straddling p is decoded and its surviving tokens re-enter the window.
  void truncate(std::size_t p, Allowance& a) {
    while (!log.empty() && log.back().trigger > p) {
      undo(log.back(), a);
      log_bytes_.remove(entry_bytes(log.back()), a);
      log.pop_back();
    }
    const bool deep = p < floor;
    std::size_t start = length();
    for (std::size_t j = layout.n_segments(); j-- > 0;) {
      start -= counts[j];
      if (start >= p) {
        for (auto& run : data[j]) run.clear();
        counts[j] = 0;
        continue;
      }
      if (start + counts[j] <= p) break;
      const std::size_t g = layout.segment(j).tokens_per_tile;
      const std::size_t keep = p - start, tiles_keep = keep / g, partial = keep % g;
      const std::size_t w = layout.window_segment();
      std::vector<float> tile(g * head_dim);
      for (std::size_t h = 0; h < n_heads; ++h) {
        if (partial) codecs[j].decode_tile(data[j][h].tile(tiles_keep), tile.data());
        data[j][h].pop_back(counts[j] / g - tiles_keep);
        clamp_to_domain(tile.data(), partial, head_dim);
        for (std::size_t i = 0; i < partial; ++i)
          codecs[w].encode_tile(tile.data() + i * head_dim, data[w][h].push_back(a, start + tiles_keep * g + i));
      }
      counts[j] = tiles_keep * g;
      counts[w] += partial;
      break;
    }
    if (deep) {
      clear_log();
      floor = p;
    }
  }

  void clear() {
    for (auto& seg : data)
      for (auto& run : seg) run.clear();
    std::fill(counts.begin(), counts.end(), 0);
    clear_log();
    floor = 0;
  }

  // Bytes an append of n tokens to a stream of `length` tokens allocates at
  // most (pages, counted before any page it frees, plus the log's net growth).
  std::size_t append_bound(std::size_t length, std::size_t n) const {
    std::vector<std::size_t> c = counts;
    std::vector<RunOp> ops;
    std::deque<std::pair<std::size_t, std::size_t>> lg;  // (trigger, bytes) of the log, oldest first
    for (const auto& e : log) lg.emplace_back(e.trigger, entry_bytes(e));
    long long log_net = 0, log_peak = 0;
    for (std::size_t L = length + 1; L <= length + n; ++L) {
      const std::size_t seg = layout.entry_segment(c);
      ops.push_back({seg, RunOp::push_back, 1, first_position(c, seg)});
      ++c[seg];
      while (auto t = layout.next(c, L)) {
        const std::size_t from = t->from, to = from - 1;
        ops.push_back({to, RunOp::push_back, t->n_tokens / layout.segment(to).tokens_per_tile,
                       first_position(c, to) / layout.segment(to).tokens_per_tile});
        ops.push_back({from, RunOp::pop_front, t->n_tokens / layout.segment(from).tokens_per_tile, 0});
        c[from] -= t->n_tokens;
        c[to] += t->n_tokens;
        if (reserve) {
          const std::size_t b = layout.bytes_of(from, t->n_tokens) * n_heads;
          lg.emplace_back(L, b);
          log_net += static_cast<long long>(b);
          log_peak = std::max(log_peak, log_net);
        }
      }
      while (!lg.empty() && lg.front().first + reserve <= L) {
        log_net -= static_cast<long long>(lg.front().second);
        lg.pop_front();
      }
    }
    return page_bound(ops) + static_cast<std::size_t>(log_peak);
  }

  // The same for truncate(p).
  std::size_t truncate_bound(std::size_t p) const {
    std::vector<std::size_t> c = counts;
    std::vector<RunOp> ops;
    for (auto it = log.rbegin(); it != log.rend() && it->trigger > p; ++it) {
      const std::size_t to = it->from - 1;
      const std::size_t gf = layout.segment(it->from).tokens_per_tile;
      ops.push_back({to, RunOp::pop_back, it->n_tokens / layout.segment(to).tokens_per_tile, 0});
      ops.push_back({it->from, RunOp::push_front, it->n_tokens / gf, (first_position(c, it->from) - it->n_tokens) / gf});
      c[to] -= it->n_tokens;
      c[it->from] += it->n_tokens;
    }
    std::size_t start = std::accumulate(c.begin(), c.end(), std::size_t{0});
    const std::size_t w = layout.window_segment();
    for (std::size_t j = layout.n_segments(); j-- > 0;) {
      const std::size_t g = layout.segment(j).tokens_per_tile;
      start -= c[j];
      if (start >= p) {
        ops.push_back({j, RunOp::pop_back, c[j] / g, 0});
        continue;
      }
      if (start + c[j] <= p) break;
      const std::size_t keep = p - start;
      ops.push_back({j, RunOp::pop_back, c[j] / g - keep / g, 0});
      ops.push_back({w, RunOp::push_back, keep % g, start + keep / g * g});
      break;
    }
    return page_bound(ops);
  }

  // This (empty) stream becomes a copy of `o`, sharing its pages or with
  // its own; the undo log (at most rollback_reserve appends' moves) is copied.
  void copy_from(const Stream& o, bool share_pages, Allowance& a) {
    for (std::size_t j = 0; j < data.size(); ++j)
      for (std::size_t h = 0; h < n_heads; ++h) {
        const PagedRun& src = o.data[j][h];
        if (share_pages) {
          data[j][h].share(src);
        } else {
          data[j][h].clear();
          std::size_t ft = o.first_tile(j);
          src.for_each_page([&](const std::byte* tiles, std::size_t nt) {
            data[j][h].append(tiles, nt, a, ft);
            ft += nt;
          });
        }
      }
    counts = o.counts;
    log_bytes_.release();
    log_bytes_.add(o.log_bytes(), a);
    log = o.log;
    floor = o.floor;
  }
  // What copy_from(*this, share_pages) allocates at most.
  std::size_t copy_bound(bool share_pages) const {
    std::size_t b = log_bytes();
    if (!share_pages)
      for (std::size_t j = 0; j < data.size(); ++j) {
        for (std::size_t h = 0; h < n_heads; ++h) b += data[j][h].n_pages() * page_bytes(j);  // the same pages
      }
    return b;
  }

  std::size_t segment_bytes() const noexcept {
    std::size_t b = 0;
    for (std::size_t j = 0; j < counts.size(); ++j) b += layout.bytes_of(j, counts[j]) * n_heads;
    return b;
  }
  std::size_t log_bytes() const noexcept { return log_bytes_.bytes(); }
  // Bytes of the pages held (whole pages, shared ones included).
  std::size_t page_capacity() const noexcept {
    std::size_t b = 0;
    for (const auto& seg : data)
      for (const auto& run : seg) b += run.n_pages() * run.page_bytes();
    return b;
  }
  std::size_t page_bytes(std::size_t j) const noexcept {
    return layout.tiles_per_page(j) * layout.segment(j).bytes_per_tile;
  }

  std::vector<AnyCodec> codecs;  // per segment
  StreamLayout layout;
  std::size_t n_heads, head_dim, reserve;
  std::vector<std::vector<PagedRun>> data;  // [segment][head]
  std::vector<std::size_t> counts;          // tokens per segment
  std::deque<UndoEntry> log;                // oldest first
  std::size_t floor = 0;                    // truncate(p) is exact iff p >= floor
  std::vector<float> scratch;               // decoded tokens in flight (no allocation per move)

 private:
  // The position of segment j's first token (with counts c), and its tile index.
  std::size_t first_position(const std::vector<std::size_t>& c, std::size_t j) const noexcept {
    return std::accumulate(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(j), std::size_t{0});
  }
  std::size_t first_position(std::size_t j) const noexcept { return first_position(counts, j); }
  std::size_t first_tile(std::size_t j) const noexcept { return first_position(j) / layout.segment(j).tokens_per_tile; }
  std::size_t entry_bytes(const UndoEntry& e) const noexcept { return layout.bytes_of(e.from, e.n_tokens) * n_heads; }
  // A run operation of a planned stream operation (the same for every head).
  struct RunOp {
    enum Kind : unsigned char { push_back, push_front, pop_front, pop_back };
    std::size_t segment;
    Kind kind;
    std::size_t tiles;
    std::size_t first_tile;  // of the pushed tiles
  };
  // Page bytes `ops` allocate at most, over every head (heads' pages differ
  // in phase, so each is counted on its own bookkeeping).
  std::size_t page_bound(const std::vector<RunOp>& ops) const {
    std::size_t bytes = 0;
    std::vector<RunCounts> rc(data.size());
    for (std::size_t h = 0; h < n_heads; ++h) {
      for (std::size_t j = 0; j < data.size(); ++j) rc[j] = data[j][h].counts();
      for (const RunOp& op : ops) {
        RunCounts& r = rc[op.segment];
        switch (op.kind) {
          case RunOp::push_back: bytes += r.push_back(op.tiles, op.first_tile) * page_bytes(op.segment); break;
          case RunOp::push_front: bytes += r.push_front(op.tiles, op.first_tile) * page_bytes(op.segment); break;
          case RunOp::pop_front: r.pop_front(std::min(op.tiles, r.size)); break;
          case RunOp::pop_back: r.pop_back(std::min(op.tiles, r.size)); break;
        }
      }
    }
    return bytes;
  }
  void clear_log() noexcept {
    log.clear();
    log_bytes_.release();
  }
  friend struct SnapshotIO;
  LogBytes log_bytes_;
};

}  // namespace detail
}  // namespace kvq
