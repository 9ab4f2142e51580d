// Memory accounting of a cache, and the planner that projects it to a context length.
//
// The planner runs the cache's own count rules (StreamLayout) token by token
// without data, so a projection at the current length equals what the cache
// holds, byte for byte; that is how the seeds' "memory at 32K / 128K" tables
// are produced (`kvq plan`). Bytes are the stored payload (tiles, exact
// tokens, the rollback reserve), not allocator capacity.
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/cache/stream.hpp>

#include <cstddef>
#include <deque>
#include <map>
#include <utility>
#include <vector>

namespace kvq {

struct MemoryUse {
  std::size_t tokens = 0;             // token positions held, summed over the layers counted
  std::size_t values = 0;             // scalars held, K and V: tokens * n_kv_heads * head_dim * 2
  std::size_t compressed_values = 0;  // of which in compressed tiers
  std::size_t compressed_bytes = 0;   // compressed tiers
  std::size_t exact_bytes = 0;        // sinks and recent window
  std::size_t reserve_bytes = 0;      // rollback undo log
  std::size_t heavy_bytes = 0;        // exact copies of heavy hitters (and tokens being judged)

  std::size_t total_bytes() const noexcept { return compressed_bytes + exact_bytes + reserve_bytes + heavy_bytes; }
  std::size_t fp16_bytes() const noexcept { return 2 * values; }
  // Everything held, per value stored.
  double bits_per_value() const noexcept { return values ? 8.0 * double(total_bytes()) / double(values) : 0.0; }
  // The compressed tiers alone (the codecs' own cost, tiers mixed).
  double payload_bits_per_value() const noexcept {
    return compressed_values ? 8.0 * double(compressed_bytes) / double(compressed_values) : 0.0;
  }
  MemoryUse& operator+=(const MemoryUse& o) noexcept {
    tokens += o.tokens;
    values += o.values;
    compressed_values += o.compressed_values;
    compressed_bytes += o.compressed_bytes;
    exact_bytes += o.exact_bytes;
    reserve_bytes += o.reserve_bytes;
    heavy_bytes += o.heavy_bytes;
    return *this;
  }
  friend bool operator==(const MemoryUse&, const MemoryUse&) = default;
};

struct MemoryReport {
  std::vector<MemoryUse> layers;  // by KV-layer ordinal
  MemoryUse total;
  friend bool operator==(const MemoryReport&, const MemoryReport&) = default;
};

namespace detail {
// One stream's use; `tokens` is counted by the caller once per layer.
inline MemoryUse stream_use(const StreamLayout& layout, const std::vector<std::size_t>& counts,
                            std::size_t log_bytes, std::size_t n_heads, std::size_t head_dim) {
  MemoryUse u;
  for (std::size_t j = 0; j < counts.size(); ++j) {
    const std::size_t bytes = layout.bytes_of(j, counts[j]) * n_heads;
    u.values += counts[j] * n_heads * head_dim;
    if (layout.is_exact(j)) {
      u.exact_bytes += bytes;
    } else {
      u.compressed_bytes += bytes;
      u.compressed_values += counts[j] * n_heads * head_dim;
    }
  }
  u.reserve_bytes = log_bytes;
  return u;
}

// Token counts per segment and undo-log bytes after `length` appends.
inline std::pair<std::vector<std::size_t>, std::size_t> simulate_stream(const StreamLayout& layout,
                                                                       std::size_t n_heads, std::size_t reserve,
                                                                       std::size_t length) {
  std::vector<std::size_t> counts(layout.n_segments(), 0);
  std::deque<std::pair<std::size_t, std::size_t>> log;  // (trigger, bytes)
  std::size_t log_bytes = 0;
  for (std::size_t L = 1; L <= length; ++L) {
    ++counts[layout.entry_segment(counts)];
    while (auto t = layout.next(counts, L)) {
      counts[t->from] -= t->n_tokens;
      counts[t->from - 1] += t->n_tokens;
      if (reserve) {
        const std::size_t b = layout.bytes_of(t->from, t->n_tokens) * n_heads;
        log.emplace_back(L, b);
        log_bytes += b;
      }
    }
    while (!log.empty() && log.front().first + reserve <= L) {
      log_bytes -= log.front().second;
      log.pop_front();
    }
  }
  return {counts, log_bytes};
}
}  // namespace detail

// What one stream (K or V of KV layer `kv_ordinal`, all its KV heads) of a
// cache of `shape` and `spec` holds at `context_tokens` tokens; `tokens` is 0
// (the caller counts positions once per layer). Streams are priced
// independently: plan_memory is the sum of these, which is what lets a bit
// allocator price one layer's K codec at a time.
inline MemoryUse plan_stream(const ModelShape& shape, const CacheSpec& spec, std::size_t kv_ordinal, StreamKind kind,
                             std::size_t context_tokens, const CodecFactory& make = default_codec_factory) {
  const auto config = detail::stream_config(shape, spec, make, kv_ordinal, kind);
  const auto [counts, log_bytes] =
      detail::simulate_stream(config.layout, shape.n_kv_heads, spec.rollback_reserve, context_tokens);
  MemoryUse u = detail::stream_use(config.layout, counts, log_bytes, shape.n_kv_heads, shape.head_dim);
  // Heavy hitters: a full set once enough tokens are compressed (an upper
  // bound: a cache holds fewer when fewer tokens drew long-range attention).
  std::size_t compressed = 0;
  for (std::size_t j = 1; j < config.layout.window_segment(); ++j) compressed += counts[j];
  u.heavy_bytes = std::min(spec.heavy, compressed) * shape.n_kv_heads *
                  config.layout.segment(config.layout.window_segment()).bytes_per_tile;
  return u;
}

// Bytes a cache of `shape` and `spec` holds with every KV layer at
// `context_tokens` tokens (appended one by one or in batches: the same).
inline MemoryReport plan_memory(const ModelShape& shape, const CacheSpec& spec, std::size_t context_tokens,
                                const CodecFactory& make = default_codec_factory) {
  shape.validate();
  spec.validate(shape);
  MemoryReport report;
  std::map<std::pair<int, std::string>, MemoryUse> memo;  // streams with equal codecs project equally
  for (std::size_t o = 0; o < shape.n_kv_layers(); ++o) {
    MemoryUse layer;
    const CodecPair codecs = spec.layer_codecs(shape, o);
    for (StreamKind kind : {StreamKind::key, StreamKind::value}) {
      const auto key = std::make_pair(int(kind), kind == StreamKind::key ? codecs.k : codecs.v);
      auto it = memo.find(key);
      if (it == memo.end()) it = memo.emplace(key, plan_stream(shape, spec, o, kind, context_tokens, make)).first;
      layer += it->second;
    }
    layer.tokens = context_tokens;
    report.layers.push_back(layer);
    report.total += layer;
  }
  return report;
}

}  // namespace kvq
