// The cache configurations the snapshot_restore fuzz target restores into, and
// the deterministic K/V its seed snapshots are filled with (make_corpus.cpp).
//
// Small on purpose (head_dim 32, few heads and layers, short contexts) so a
// valid snapshot is a few KB and an execution takes microseconds, yet together
// they cover every kind of segment: sinks, f32 and f16 windows, row codecs,
// a tier below the policy codec, a tile codec (pc4, 128 tokens per tile),
// turbo, a hybrid shape, and rollback reserves (undo logs in the snapshot).
#pragma once

#include <kvq/cache/snapshot.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace kvq::fuzz {

struct SnapshotConfig {
  ModelShape shape;
  const char* spec;
};

inline const std::vector<SnapshotConfig>& snapshot_configs() {
  static const std::vector<SnapshotConfig> configs = {
      {ModelShape::dense(2, 2, 1, 32, 40), "k=q4_1,v=q8_0,window=4,sinks=2,tier=8:q2_1/q2_1,rollback=3"},
      {ModelShape::hybrid(4, 2, 2, 2, 32, 24), "k=turbo3,v=q3_1,window=2,precision=f16,rollback=4"},
      {ModelShape::dense(1, 1, 1, 32, 140), "k=pc4,v=q4_0,window=4,sinks=1,rollback=2"},
      {ModelShape::dense(1, 2, 2, 32, 24), "k=q8_0,v=q2_1"},
  };
  return configs;
}

// A cache of configuration `i`, empty: a copy of one built once, since
// building codecs (turbo's codebook at head_dim 32) costs more than an execution.
inline Cache make_snapshot_cache(std::size_t i) {
  static const std::vector<Cache> empty = [] {
    std::vector<Cache> caches;
    for (const auto& c : snapshot_configs()) caches.emplace_back(c.shape, CacheSpec::parse(c.spec));
    return caches;
  }();
  return empty[i % empty.size()];
}

// One valid token for `shape` ([n_kv_heads][head_dim]): bounded values that
// depend on the position, so tokens differ and every codec stores them.
inline std::vector<float> snapshot_token(const ModelShape& shape, std::size_t position, float sign = 1.0f) {
  std::vector<float> x(shape.n_kv_heads * shape.head_dim);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = sign * std::sin(0.37f * static_cast<float>(i + 1) + 0.11f * static_cast<float>(position));
  return x;
}

// Appends `n` tokens to every KV layer (layer o gets n + o: lengths differ).
inline void fill_snapshot_cache(Cache& cache, std::size_t n) {
  const ModelShape& s = cache.shape();
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) {
    const std::size_t layer = s.kv_layer(o);
    for (std::size_t t = cache.length(layer); t < std::min(n + o, s.max_context); ++t) {
      const auto k = snapshot_token(s, t), v = snapshot_token(s, t, -0.5f);
      cache.append(layer, k.data(), v.data());
    }
  }
}

}  // namespace kvq::fuzz
