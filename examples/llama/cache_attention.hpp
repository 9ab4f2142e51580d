// CacheAttention: an AttentionBackend whose K/V live in a kvq::Cache built from a spec string.
//
// This is how kvq-ppl measures what a cache configuration costs in perplexity: the llama
// forward pass appends each layer's post-RoPE K/V to a kvq::Cache (codecs, recent window,
// sinks, tiers and boundary layers all from the CacheSpec) and reads attention back through
// the cache's own fused path (Cache::attend), never through a decompressed copy.
//
// Two prefill semantics (the forward pass hands over a chunk of n tokens at a time):
//  - Prefill::decode (default): inside the backend the chunk is replayed token by token --
//    append token i, attend query i -- so every query sees the cache exactly as token-by-token
//    generation would (its own recent window exact, older tokens compressed). The result is
//    independent of the model's chunk size up to float rounding, and the model still runs its
//    projections as matrix-matrix products over the chunk.
//  - Prefill::batch: the whole chunk is appended first, then Cache::attend(n_pos) runs all n
//    queries against the state *after* the chunk (what an engine doing chunked prefill sees):
//    early queries of a chunk find some of their recent keys already compressed, so a window
//    of W tokens acts like W - (chunk - 1) for the first query of a chunk.
//
// Two ways to read attention out of the cache:
//  - Readout::kernel (default): Cache::attend, the library's fused path over compressed tiles.
//  - Readout::decoded: the backend keeps a float mirror of what the cache holds -- after every
//    append it decodes (SegmentView + the segment's codec) exactly the tiles whose
//    representation changed (a token entering a tier, leaving the window, ...) -- and runs
//    softmax attention over the mirror with Eigen. Same cache, same representation at every
//    step, so the same quality up to float rounding with f32 scores (set_int8_scores(false);
//    the kernel readout's default int8 query scores add their bounded rounding; the codecs score in their working space,
//    e.g. rotated for turbo); about 10x faster than the scalar reference kernels, which is what
//    makes a full perplexity table affordable before the SIMD kernels land. The agreement of
//    the two readouts is tested (tests/examples/ppl_cache.cpp) and measured (docs/QUALITY.md).
#pragma once

#include "llama_model.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace kvq::llama {

enum class Prefill { decode, batch };
enum class Readout { kernel, decoded };

// Bytes and bits/value held by a cache, K and V separately (sums over layers and KV heads).
struct StreamBytes {
  std::size_t k_bytes = 0, v_bytes = 0, values_per_stream = 0;  // values: tokens * kv_heads * head_dim * layers
  double k_bits() const noexcept { return values_per_stream ? 8.0 * double(k_bytes) / double(values_per_stream) : 0.0; }
  double v_bits() const noexcept { return values_per_stream ? 8.0 * double(v_bytes) / double(values_per_stream) : 0.0; }
};

// What `cache` holds now, K and V separately, from its segments (sinks, tiers, window).
inline StreamBytes stream_bytes(const kvq::Cache& cache) {
  StreamBytes s;
  const auto& shape = cache.shape();
  for (std::size_t o = 0; o < shape.n_kv_layers(); ++o) {
    const std::size_t layer = shape.kv_layer(o);
    s.values_per_stream += cache.length(layer) * shape.n_kv_heads * shape.head_dim;
    for (std::size_t h = 0; h < shape.n_kv_heads; ++h) {
      for (const auto& seg : cache.segments(layer, kvq::StreamKind::key, h)) s.k_bytes += seg.bytes.size();
      for (const auto& seg : cache.segments(layer, kvq::StreamKind::value, h)) s.v_bytes += seg.bytes.size();
    }
  }
  return s;
}

class CacheAttention final : public AttentionBackend {
 public:
  CacheAttention(const AttentionShape& shape, int max_context, const kvq::CacheSpec& spec,
                 Prefill mode = Prefill::decode, Readout readout = Readout::kernel)
      : s_(shape),
        mode_(mode),
        readout_(readout),
        cache_(kvq::ModelShape::dense(static_cast<std::size_t>(shape.n_layers), static_cast<std::size_t>(shape.n_heads),
                                      static_cast<std::size_t>(shape.n_kv_heads),
                                      static_cast<std::size_t>(shape.head_dim), static_cast<std::size_t>(max_context)),
               spec) {
    pending_k_.resize(static_cast<std::size_t>(shape.n_layers));
    pending_v_.resize(pending_k_.size());
    if (readout_ == Readout::decoded) {
      const std::size_t streams = static_cast<std::size_t>(shape.n_layers * shape.n_kv_heads) * 2;
      mirror_.resize(streams);
      for (auto& m : mirror_) m.values.resize(static_cast<std::size_t>(max_context) * shape.head_dim);
    }
  }
  CacheAttention(const AttentionShape& shape, int max_context, const std::string& spec,
                 Prefill mode = Prefill::decode, Readout readout = Readout::kernel)
      : CacheAttention(shape, max_context, kvq::CacheSpec::parse(spec), mode, readout) {}

  const kvq::Cache& cache() const noexcept { return cache_; }
  // Readout::kernel scores uniform-format keys with int8 queries unless this
  // is off (kvq::Cache::set_int8_scores); the decoded mirror is always f32.
  void set_int8_scores(bool on) noexcept { cache_.set_int8_scores(on); }
  Prefill mode() const noexcept { return mode_; }
  Readout readout() const noexcept { return readout_; }

  void reset() override {
    cache_.clear();
    for (auto& m : mirror_) m.seen.clear();
    for (auto& p : pending_k_) p.clear();
    for (auto& p : pending_v_) p.clear();
  }

  void append(int layer, int n, const float* k, const float* v) override {
    check_layer(layer);
    kvq::detail::require(n >= 0, Errc::invalid_argument, "CacheAttention::append: negative n");
    if (mode_ == Prefill::batch) {
      cache_.append(static_cast<std::size_t>(layer), static_cast<std::size_t>(n), k, v);
      sync_mirror(layer);
      return;
    }
    // decode: held until attend() replays them one token at a time
    const std::size_t row = static_cast<std::size_t>(s_.n_kv_heads * s_.head_dim) * static_cast<std::size_t>(n);
    auto& pk = pending_k_[static_cast<std::size_t>(layer)];
    auto& pv = pending_v_[static_cast<std::size_t>(layer)];
    pk.insert(pk.end(), k, k + row);
    pv.insert(pv.end(), v, v + row);
  }

  void attend(int layer, int n, int first_pos, const float* q, float* out) override {
    check_layer(layer);
    const auto L = static_cast<std::size_t>(layer);
    const std::size_t q_row = static_cast<std::size_t>(s_.n_heads * s_.head_dim);
    if (mode_ == Prefill::batch) {
      kvq::detail::require(n > 0 && first_pos >= 0 &&
                               static_cast<std::size_t>(first_pos + n) == cache_.length(L),
                           Errc::out_of_range,
                           "CacheAttention::attend: batch mode attends the newest appended tokens only");
      if (readout_ == Readout::kernel) {
        cache_.attend(L, static_cast<std::size_t>(n), q, out);
      } else {
        for (int i = 0; i < n; ++i)
          attend_mirror(layer, first_pos + i + 1, q + static_cast<std::size_t>(i) * q_row,
                        out + static_cast<std::size_t>(i) * q_row);
      }
      return;
    }
    const std::size_t kv_row = static_cast<std::size_t>(s_.n_kv_heads * s_.head_dim);
    auto& pk = pending_k_[L];
    auto& pv = pending_v_[L];
    const std::size_t held = cache_.length(L), pending = pk.size() / kv_row;
    kvq::detail::require(n > 0 && first_pos >= 0 && static_cast<std::size_t>(first_pos) >= held &&
                             static_cast<std::size_t>(first_pos + n) == held + pending,
                         Errc::out_of_range,
                         "CacheAttention::attend: decode mode attends each pending token once, in order");
    // Tokens before first_pos are appended without a query (never the case in LlamaModel).
    std::size_t next = 0;
    for (; held + next < static_cast<std::size_t>(first_pos); ++next) {
      cache_.append(L, 1, pk.data() + next * kv_row, pv.data() + next * kv_row);
      sync_mirror(layer);
    }
    for (int i = 0; i < n; ++i, ++next) {
      cache_.append(L, 1, pk.data() + next * kv_row, pv.data() + next * kv_row);
      const float* qi = q + static_cast<std::size_t>(i) * q_row;
      float* oi = out + static_cast<std::size_t>(i) * q_row;
      if (readout_ == Readout::kernel) {
        cache_.attend(L, 1, qi, oi);
      } else {
        sync_mirror(layer);
        attend_mirror(layer, first_pos + i + 1, qi, oi);
      }
    }
    pk.clear();
    pv.clear();
  }

 private:
  // The decoded copy of one stream (one layer, KV head, K or V): values[t * head_dim + i] is
  // token t as the cache holds it now; seen[j] is the token range segment j held when it was
  // last decoded (tiles do not change while they stay in their segment, whatever page they are in).
  struct Mirror {
    std::vector<float> values;
    std::vector<std::pair<std::size_t, std::size_t>> seen;  // [first, first + n) per segment
  };
  Mirror& mirror(int layer, int h, kvq::StreamKind kind) {
    return mirror_[(static_cast<std::size_t>(layer * s_.n_kv_heads + h)) * 2 + (kind == kvq::StreamKind::key ? 0 : 1)];
  }

  // Decodes the tiles whose segment changed since the last call.
  void sync_mirror(int layer) {
    if (readout_ != Readout::decoded) return;
    const std::size_t d = static_cast<std::size_t>(s_.head_dim);
    for (kvq::StreamKind kind : {kvq::StreamKind::key, kvq::StreamKind::value})
      for (int h = 0; h < s_.n_kv_heads; ++h) {
        Mirror& m = mirror(layer, h, kind);
        const auto segs = cache_.segments(static_cast<std::size_t>(layer), kind, static_cast<std::size_t>(h));
        // Views are pages; a segment's range is the span of its pages.
        const std::size_t n_seg = segs.empty() ? 0 : segs.back().segment + 1;
        std::vector<std::pair<std::size_t, std::size_t>> now(n_seg, {0, 0});
        for (const auto& seg : segs) {
          auto& r = now[seg.segment];
          if (r.first == r.second) r.first = seg.first_position;
          r.second = seg.first_position + seg.n_tokens;
        }
        m.seen.resize(n_seg, {0, 0});
        for (const auto& seg : segs) {
          const std::size_t a = seg.first_position, b = a + seg.n_tokens;
          const auto [oa, ob] = m.seen[seg.segment];
          if (a == b) continue;
          const std::size_t g = seg.codec->tokens_per_tile(), bt = seg.codec->bytes_per_tile();
          auto decode = [&](std::size_t x, std::size_t y) {  // tiles covering tokens [x, y)
            for (std::size_t t = (x - a) / g; t < (y - a + g - 1) / g; ++t)
              seg.codec->decode_tile(seg.bytes.data() + t * bt, m.values.data() + (a + t * g) * d);
          };
          if (oa == ob || ob <= a || oa >= b) {
            decode(a, b);
          } else {
            if (a < oa) decode(a, oa);
            if (ob < b) decode(ob, b);
          }
        }
        m.seen = std::move(now);
      }
  }

  // Softmax attention of one query position over tokens [0, visible) of the mirror.
  void attend_mirror(int layer, int visible, const float* q, float* out) {
    const int hd = s_.head_dim, group = s_.n_heads / s_.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (int g = 0; g < s_.n_kv_heads; ++g) {
      Eigen::Map<const RowMatrix> Q(q + static_cast<std::size_t>(g * group) * hd, group, hd);
      Eigen::Map<const RowMatrix> K(mirror(layer, g, kvq::StreamKind::key).values.data(), visible, hd);
      Eigen::Map<const RowMatrix> V(mirror(layer, g, kvq::StreamKind::value).values.data(), visible, hd);
      scores_.noalias() = (Q * K.transpose()) * scale;
      for (int r = 0; r < group; ++r) {
        auto row = scores_.row(r).array();
        row = (row - row.maxCoeff()).exp();
        row /= row.sum();
      }
      Eigen::Map<RowMatrix> O(out + static_cast<std::size_t>(g * group) * hd, group, hd);
      O.noalias() = scores_ * V;
    }
  }

  void check_layer(int layer) const {
    kvq::detail::require(layer >= 0 && layer < s_.n_layers, Errc::out_of_range,
                         "CacheAttention: layer " + std::to_string(layer) + " out of range");
  }

  AttentionShape s_;
  Prefill mode_;
  Readout readout_;
  kvq::Cache cache_;
  std::vector<Mirror> mirror_;  // decoded readout: [(layer * n_kv_heads + h) * 2 + (K ? 0 : 1)]
  RowMatrix scores_;
  std::vector<std::vector<float>> pending_k_, pending_v_;  // decode mode: [layer] -> [n][n_kv][head_dim]
};

}  // namespace kvq::llama
