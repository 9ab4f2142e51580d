// kvq::Cache, the run-time configured compressed K/V cache, and
// kvq::KVCache<Policy, LayerSchedule, AgeSchedule>, its typed facade.
//
// Engines choose a configuration from a command line, so the core is built
// from a ModelShape and a CacheSpec; the typed facade builds the same spec
// from compile-time codec types. Per KV layer and KV head the K and V streams
// (stream.hpp) hold sinks, compressed tiers and an exact recent window, and
// attention runs segment by segment in each codec's working space, never on a
// decompressed copy of the cache.
//
// Input domain: finite K/V vectors whose Euclidean norm (per KV head) is at
// most 65504, fp16's largest finite value; that bound keeps every codec's fp16
// metadata finite. Every append is checked in full before anything is stored,
// so a refused call leaves the cache as it was.
#pragma once

#include <kvq/cache/attention.hpp>
#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/cache/policy.hpp>
#include <kvq/cache/stream.hpp>
#include <kvq/schedule/age_schedule.hpp>
#include <kvq/schedule/layer_schedule.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace kvq {

// One stretch of a stream for one KV head: `n_tokens` tokens from
// `first_position`, stored as whole tiles of `codec` in `bytes`.
struct SegmentView {
  const AnyCodec* codec = nullptr;
  std::size_t first_position = 0;
  std::size_t n_tokens = 0;
  std::span<const std::byte> bytes;
};

namespace detail {
struct SnapshotIO;
}

class Cache {
 public:
  static constexpr float max_vector_norm = 65504.0f;

  Cache(ModelShape shape, CacheSpec spec, CodecFactory make = default_codec_factory)
      : shape_(std::move(shape)), spec_(std::move(spec)), make_(std::move(make)) {
    shape_.validate();
    spec_.validate(shape_);
    layers_.reserve(shape_.n_kv_layers());
    for (std::size_t o = 0; o < shape_.n_kv_layers(); ++o) {
      layers_.push_back(Layer{0,
                              detail::Stream(detail::stream_config(shape_, spec_, make_, o, StreamKind::key),
                                             shape_.n_kv_heads, shape_.head_dim, spec_.rollback_reserve),
                              detail::Stream(detail::stream_config(shape_, spec_, make_, o, StreamKind::value),
                                             shape_.n_kv_heads, shape_.head_dim, spec_.rollback_reserve)});
    }
  }

  const ModelShape& shape() const noexcept { return shape_; }
  const CacheSpec& spec() const noexcept { return spec_; }
  const CodecFactory& codec_factory() const noexcept { return make_; }

  // Tokens held by `layer` (a raw layer index, like every `layer` argument).
  std::size_t length(std::size_t layer) const { return layers_[ordinal(layer, "length")].length; }

  // One token: k and v are [n_kv_heads][head_dim].
  void append(std::size_t layer, const float* k, const float* v) { append(layer, 1, k, v); }

  // n tokens (prefill): k and v are [n][n_kv_heads][head_dim].
  void append(std::size_t layer, std::size_t n, const float* k, const float* v) {
    Layer& L = layers_[ordinal(layer, "append")];
    if (n == 0) return;
    detail::require(k != nullptr && v != nullptr, Errc::invalid_argument, "append: k or v is null");
    detail::require(n <= shape_.max_context - L.length, Errc::out_of_range,
                    "append: " + std::to_string(n) + " tokens on layer " + std::to_string(layer) + " holding " +
                        std::to_string(L.length) + " exceed max_context " + std::to_string(shape_.max_context));
    check_tokens("k", k, n);
    check_tokens("v", v, n);
    const std::size_t stride = shape_.n_kv_heads * shape_.head_dim;
    for (std::size_t t = 0; t < n; ++t) {
      ++L.length;
      L.k.append(k + t * stride, L.length);
      L.v.append(v + t * stride, L.length);
    }
  }

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
  void attend(std::size_t layer, std::size_t n_pos, const float* q, float* out,
              std::optional<float> scale = std::nullopt) const {
    const Layer& L = layers_[ordinal(layer, "attend")];
    detail::require(q != nullptr && out != nullptr, Errc::invalid_argument, "attend: q or out is null");
    detail::require(L.length > 0, Errc::invalid_argument,
                    "attend: layer " + std::to_string(layer) + " is empty (append K/V before attending)");
    detail::require(n_pos > 0 && n_pos <= L.length, Errc::out_of_range,
                    "attend: n_pos " + std::to_string(n_pos) + " not in 1.." + std::to_string(L.length));
    const float s = scale.value_or(1.0f / std::sqrt(static_cast<float>(shape_.head_dim)));
    detail::require(std::isfinite(s), Errc::invalid_argument, "attend: scale is not finite");
    const std::size_t d = shape_.head_dim, g = shape_.group_size(), n = L.length;
    std::vector<float> w(g * n);
    for (std::size_t i = 0; i < n_pos; ++i) {
      const std::size_t visible = n - n_pos + i + 1;
      const float* qi = q + i * shape_.n_q_heads * d;
      float* oi = out + i * shape_.n_q_heads * d;
      for (std::size_t h = 0; h < shape_.n_kv_heads; ++h) {
        for_each_segment(L.k, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt) {
          detail::segment_scores(c, qi + h * g * d, g, d, tiles, nt, w.data() + first, n);
        });
        for (std::size_t j = 0; j < g; ++j) detail::softmax_row(w.data() + j * n, n, visible, s);
        std::fill(oi + h * g * d, oi + (h + 1) * g * d, 0.0f);
        for_each_segment(L.v, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt) {
          detail::segment_accumulate(c, w.data() + first, g, n, tiles, nt, oi + h * g * d, d);
        });
      }
    }
  }

  // Raw scores q . k_t (unscaled) of query head q_head against every key of
  // `layer`: q is [head_dim], out is [length(layer)]. For engines running
  // their own softmax.
  void scores(std::size_t layer, std::size_t q_head, const float* q, float* out) const {
    const Layer& L = layers_[ordinal(layer, "scores")];
    const std::size_t h = kv_head_of(q_head, "scores");
    for_each_segment(L.k, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt) {
      detail::segment_scores(c, q, 1, shape_.head_dim, tiles, nt, out + first, 0);
    });
  }

  // out = sum_t weights[t] v_t over every value of `layer` for query head
  // q_head: weights is [length(layer)], out is [head_dim].
  void accumulate(std::size_t layer, std::size_t q_head, const float* weights, float* out) const {
    const Layer& L = layers_[ordinal(layer, "accumulate")];
    const std::size_t h = kv_head_of(q_head, "accumulate");
    std::fill(out, out + shape_.head_dim, 0.0f);
    for_each_segment(L.v, h, [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt) {
      detail::segment_accumulate(c, weights + first, 1, 0, tiles, nt, out, 0);
    });
  }

  // Drops every token at position >= `position` in every layer (speculative
  // decoding rollback). Exact -- the cache is then bit-identical to one that
  // never held those tokens -- when position >= exact_rollback_floor(layer),
  // which is guaranteed for rollbacks of up to spec().rollback_reserve of the
  // newest tokens. Deeper rollbacks keep older tokens in the representation
  // they have (see docs/CACHE.md).
  void truncate(std::size_t position) {
    for (Layer& L : layers_) {
      if (L.length <= position) continue;
      L.k.truncate(position);
      L.v.truncate(position);
      L.length = position;
    }
  }

  // The smallest position truncate() restores exactly on this layer.
  std::size_t exact_rollback_floor(std::size_t layer) const {
    const Layer& L = layers_[ordinal(layer, "exact_rollback_floor")];
    return std::max(L.k.floor, L.v.floor);
  }

  void clear() {
    for (Layer& L : layers_) {
      L.length = 0;
      L.k.clear();
      L.v.clear();
    }
  }

  // The segments of one stream of one KV head, in position order (empty ones included).
  std::vector<SegmentView> segments(std::size_t layer, StreamKind kind, std::size_t kv_head) const {
    const Layer& L = layers_[ordinal(layer, "segments")];
    detail::require(kv_head < shape_.n_kv_heads, Errc::out_of_range,
                    "segments: kv_head " + std::to_string(kv_head) + " >= n_kv_heads");
    std::vector<SegmentView> views;
    for_each_segment(kind == StreamKind::key ? L.k : L.v, kv_head,
                     [&](const AnyCodec& c, std::size_t first, const std::byte* tiles, std::size_t nt) {
                       views.push_back({&c, first, nt * c.tokens_per_tile(), {tiles, nt * c.bytes_per_tile()}});
                     });
    return views;
  }

  MemoryUse memory(std::size_t layer) const { return layer_use(layers_[ordinal(layer, "memory")]); }
  MemoryReport memory() const {
    MemoryReport r;
    for (const Layer& L : layers_) {
      r.layers.push_back(layer_use(L));
      r.total += r.layers.back();
    }
    return r;
  }
  std::size_t bytes_used() const { return memory().total.total_bytes(); }
  std::size_t bytes_used(std::size_t layer) const { return memory(layer).total_bytes(); }

  void swap(Cache& other) noexcept {
    std::swap(shape_, other.shape_);
    std::swap(spec_, other.spec_);
    std::swap(make_, other.make_);
    std::swap(layers_, other.layers_);
  }

 private:
  friend struct detail::SnapshotIO;
  struct Layer {
    std::size_t length = 0;
    detail::Stream k, v;
  };

  std::size_t ordinal(std::size_t layer, const char* op) const {
    const long o = shape_.kv_ordinal(layer);
    if (o < 0) {
      if (layer >= shape_.n_layers)
        detail::fail(Errc::out_of_range, std::string(op) + ": layer " + std::to_string(layer) +
                                             " >= n_layers " + std::to_string(shape_.n_layers));
      detail::fail(Errc::out_of_range,
                   std::string(op) + ": layer " + std::to_string(layer) + " has no KV cache (not in kv_layers)");
    }
    return static_cast<std::size_t>(o);
  }
  std::size_t kv_head_of(std::size_t q_head, const char* op) const {
    detail::require(q_head < shape_.n_q_heads, Errc::out_of_range,
                    std::string(op) + ": q_head " + std::to_string(q_head) + " >= n_q_heads " +
                        std::to_string(shape_.n_q_heads));
    return q_head / shape_.group_size();
  }

  void check_tokens(const char* what, const float* x, std::size_t n) const {
    const std::size_t d = shape_.head_dim;
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t h = 0; h < shape_.n_kv_heads; ++h) {
        const float* row = x + (t * shape_.n_kv_heads + h) * d;
        double sq = 0.0;
        for (std::size_t i = 0; i < d; ++i) {
          if (!std::isfinite(row[i]))
            detail::fail(Errc::non_finite, std::string("append: ") + what + "[token " + std::to_string(t) +
                                               "][head " + std::to_string(h) + "][" + std::to_string(i) +
                                               "] is not finite");
          sq += double(row[i]) * double(row[i]);
        }
        if (std::sqrt(sq) > max_vector_norm)
          detail::fail(Errc::out_of_range, std::string("append: ") + what + "[token " + std::to_string(t) +
                                               "][head " + std::to_string(h) + "] has norm " +
                                               std::to_string(std::sqrt(sq)) + " > 65504 (the cache's input domain)");
      }
  }

  template <class F>
  static void for_each_segment(const detail::Stream& s, std::size_t head, F&& f) {
    std::size_t first = 0;
    for (std::size_t j = 0; j < s.counts.size(); ++j) {
      const std::size_t g = s.layout.segment(j).tokens_per_tile;
      f(s.codecs[j], first, s.data[j][head].data(), s.counts[j] / g);
      first += s.counts[j];
    }
  }

  MemoryUse layer_use(const Layer& L) const {
    MemoryUse u = detail::stream_use(L.k.layout, L.k.counts, L.k.log_bytes(), shape_.n_kv_heads, shape_.head_dim);
    u += detail::stream_use(L.v.layout, L.v.counts, L.v.log_bytes(), shape_.n_kv_heads, shape_.head_dim);
    u.tokens = L.length;
    return u;
  }

  ModelShape shape_;
  CacheSpec spec_;
  CodecFactory make_;
  std::vector<Layer> layers_;
};

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
