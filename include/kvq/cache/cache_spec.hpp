// CacheSpec: the run-time configuration of a cache, and its compact string form.
//
// Engines pick cache configurations from command lines, so everything a cache
// needs besides the model's shape is plain data here: codec names, which KV
// layers get which codecs (LayerSchedule), how precision falls with token age
// (AgeSchedule), and the rollback reserve. The typed KVCache and the schedule
// types produce a CacheSpec; `kvq plan`, the perplexity runner and snapshots
// use its string form. Grammar (docs/CACHE.md):
//
//   spec     := item ("," item)*
//   item     := "k=" NAME | "v=" NAME | "window=" N | "sinks=" N
//             | "precision=" ("f32" | "f16") | "rollback=" N
//             | "boundary=" N "+" N ":" NAME "/" NAME
//             | "layers=" NAME "/" NAME (";" NAME "/" NAME)*
//             | "tier=" N ":" NAME "/" NAME            (repeatable, N ascending)
//             | "heavy=" N                             (heavy hitters per KV head)
//
//   e.g. "k=turbo4,v=q4_1,window=128,sinks=4,boundary=2+2:q8_0/q8_0,tier=4096:q2_1/q2_1"
#pragma once
#define KVQ_CACHE_SPEC_INCLUDED  // checked by kernels/definitions.hpp

#include <kvq/cache/model_shape.hpp>
#include <kvq/core/compiled.hpp>
#include <kvq/core/error.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kvq {

// Storage of the exact (uncompressed) tokens: the recent window and the sinks.
enum class WindowPrecision { f32, f16 };

struct CodecPair {
  std::string k;
  std::string v;
  friend bool operator==(const CodecPair&, const CodecPair&) = default;
};

// Tokens that have at least `after_tokens` newer tokens move to these codecs.
struct TierSpec {
  std::size_t after_tokens = 0;
  CodecPair codecs;
  friend bool operator==(const TierSpec&, const TierSpec&) = default;
};

struct BoundarySpec {
  std::size_t first = 0;  // first `first` KV layers (by KV-layer ordinal)
  std::size_t last = 0;   // last `last` KV layers
  CodecPair codecs;
  friend bool operator==(const BoundarySpec&, const BoundarySpec&) = default;
};

struct CacheSpec {
  CodecPair codecs{"q8_0", "q8_0"};   // every KV layer not chosen otherwise
  BoundarySpec boundary;              // used when first + last > 0
  std::vector<CodecPair> layers;      // one per KV layer; overrides codecs/boundary when set
  std::size_t window = 0;             // newest tokens kept exact
  std::size_t sinks = 0;              // first tokens kept exact
  std::vector<TierSpec> tiers;        // older tokens demoted, after_tokens ascending
  WindowPrecision window_precision = WindowPrecision::f32;
  std::size_t rollback_reserve = 0;   // newest tokens whose truncation is exact
  // Attention-aware precision (heavy_hitters.hpp): per KV layer and KV head,
  // up to `heavy` older tokens that drew the most long-range attention are
  // kept exact (at window precision) beside their compressed copies.
  std::size_t heavy = 0;

  friend bool operator==(const CacheSpec&, const CacheSpec&) = default;

  // The codecs of the KV layer with ordinal `kv_ordinal` (the cache's policy
  // tier, before any age demotion).
  CodecPair layer_codecs(const ModelShape& shape, std::size_t kv_ordinal) const {
    const std::size_t n = shape.n_kv_layers();
    detail::require(kv_ordinal < n, Errc::out_of_range,
                    "CacheSpec::layer_codecs: kv ordinal " + std::to_string(kv_ordinal) +
                        " >= number of KV layers " + std::to_string(n));
    if (!layers.empty()) return layers[kv_ordinal];
    if (kv_ordinal < boundary.first || kv_ordinal + boundary.last >= n) {
      if (boundary.first + boundary.last > 0) return boundary.codecs;
    }
    return codecs;
  }

  // Errc::invalid_argument naming the first inconsistency with `shape`.
  void validate(const ModelShape& shape) const;

  // The canonical compact string; parse(to_string()) == *this.
  std::string to_string() const;

  // Errc::invalid_argument naming the offending item.
  static CacheSpec parse(std::string_view text);
};

// Out of line with KVQ_EXTERN_KERNELS (core/compiled.hpp).
#if KVQ_COMPILED_DEFINITIONS
KVQ_COMPILED_INLINE void CacheSpec::validate(const ModelShape& shape) const {
  auto bad = [](const std::string& m) { detail::fail(Errc::invalid_argument, "CacheSpec: " + m); };
  auto named = [&](const CodecPair& p, const std::string& what) {
    if (p.k.empty() || p.v.empty()) bad(what + " needs both a K and a V codec name");
  };
  named(codecs, "k/v");
  const std::size_t n = shape.n_kv_layers();
  if (boundary.first + boundary.last > 0) {
    named(boundary.codecs, "boundary");
    if (boundary.first + boundary.last > n)
      bad("boundary " + std::to_string(boundary.first) + "+" + std::to_string(boundary.last) +
          " exceeds the " + std::to_string(n) + " KV layers");
    if (!layers.empty()) bad("boundary and layers= are exclusive (the table already names every layer)");
  }
  if (!layers.empty()) {
    if (layers.size() != n)
      bad("layers= names " + std::to_string(layers.size()) + " KV layers, the model has " + std::to_string(n));
    for (std::size_t i = 0; i < layers.size(); ++i) named(layers[i], "layers[" + std::to_string(i) + "]");
  }
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    named(tiers[i].codecs, "tier " + std::to_string(i));
    if (tiers[i].after_tokens < window)
      bad("tier after " + std::to_string(tiers[i].after_tokens) + " tokens lies inside the window of " +
          std::to_string(window));
    if (i > 0 && tiers[i].after_tokens <= tiers[i - 1].after_tokens)
      bad("tiers must have ascending after_tokens (" + std::to_string(tiers[i].after_tokens) + " after " +
          std::to_string(tiers[i - 1].after_tokens) + ")");
  }
  if (sinks > shape.max_context) bad("sinks " + std::to_string(sinks) + " exceed max_context");
  if (heavy > shape.max_context) bad("heavy " + std::to_string(heavy) + " exceeds max_context");
  if (heavy > (std::size_t{1} << 20)) bad("heavy " + std::to_string(heavy) + " exceeds 2^20 tokens per KV head");
}

KVQ_COMPILED_INLINE std::string CacheSpec::to_string() const {
  auto pair = [](const CodecPair& p) { return p.k + "/" + p.v; };
  std::string s = "k=" + codecs.k + ",v=" + codecs.v;
  if (boundary.first + boundary.last > 0)
    s += ",boundary=" + std::to_string(boundary.first) + "+" + std::to_string(boundary.last) + ":" +
         pair(boundary.codecs);
  if (!layers.empty()) {
    s += ",layers=";
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (i) s += ';';
      s += pair(layers[i]);
    }
  }
  if (window) s += ",window=" + std::to_string(window);
  if (sinks) s += ",sinks=" + std::to_string(sinks);
  if (heavy) s += ",heavy=" + std::to_string(heavy);
  for (const auto& t : tiers) s += ",tier=" + std::to_string(t.after_tokens) + ":" + pair(t.codecs);
  if (window_precision == WindowPrecision::f16) s += ",precision=f16";
  if (rollback_reserve) s += ",rollback=" + std::to_string(rollback_reserve);
  return s;
}

KVQ_COMPILED_INLINE CacheSpec CacheSpec::parse(std::string_view text) {
  CacheSpec spec;
  bool boundary_seen = false;
  auto bad = [&](std::string_view item, const std::string& why) -> void {
    detail::fail(Errc::invalid_argument, "cache spec item '" + std::string(item) + "': " + why);
  };
  auto number = [&](std::string_view item, std::string_view digits) {
    std::size_t v = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size())
      bad(item, "expected a non-negative integer, got '" + std::string(digits) + "'");
    return v;
  };
  // "/gN" after a name is a per-channel tile length (make_codec's NAME/gN),
  // not the K/V separator.
  auto is_tile_suffix = [](std::string_view part) {
    return part.size() >= 2 && part[0] == 'g' &&
           std::all_of(part.begin() + 1, part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  auto name = [&](std::string_view item, std::string_view n) {
    const auto slash = n.find('/');
    const std::string_view base = n.substr(0, slash);
    if (base.empty()) bad(item, "empty codec name");
    for (char c : base)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
        bad(item, "codec name '" + std::string(n) + "' has a character outside [A-Za-z0-9_-]");
    if (slash != std::string_view::npos && !is_tile_suffix(n.substr(slash + 1)))
      bad(item, "codec name '" + std::string(n) + "': after '/' only a tile length gN may follow");
    return std::string(n);
  };
  // K/V names separated by '/', each possibly with a /gN suffix: "pc4/g32/q4_1".
  auto pair = [&](std::string_view item, std::string_view p) {
    std::size_t sep = std::string_view::npos;
    for (std::size_t i = p.find('/'); i != std::string_view::npos; i = p.find('/', i + 1)) {
      const std::size_t next = p.find('/', i + 1);
      if (!is_tile_suffix(p.substr(i + 1, next == std::string_view::npos ? std::string_view::npos : next - i - 1))) {
        sep = i;
        break;
      }
    }
    if (sep == std::string_view::npos) bad(item, "expected K/V codec names, got '" + std::string(p) + "'");
    return CodecPair{name(item, p.substr(0, sep)), name(item, p.substr(sep + 1))};
  };
  if (text.empty()) detail::fail(Errc::invalid_argument, "cache spec is empty");
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, comma - pos);
    pos = comma + 1;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) bad(item, "expected key=value");
    const std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "k") {
      spec.codecs.k = name(item, val);
    } else if (key == "v") {
      spec.codecs.v = name(item, val);
    } else if (key == "window") {
      spec.window = number(item, val);
    } else if (key == "sinks") {
      spec.sinks = number(item, val);
    } else if (key == "heavy") {
      spec.heavy = number(item, val);
    } else if (key == "rollback") {
      spec.rollback_reserve = number(item, val);
    } else if (key == "precision") {
      if (val == "f32") spec.window_precision = WindowPrecision::f32;
      else if (val == "f16") spec.window_precision = WindowPrecision::f16;
      else bad(item, "precision is f32 or f16");
    } else if (key == "boundary") {
      if (boundary_seen) bad(item, "boundary given twice");
      boundary_seen = true;
      const auto plus = val.find('+'), colon = val.find(':');
      if (plus == std::string_view::npos || colon == std::string_view::npos || plus > colon)
        bad(item, "expected FIRST+LAST:K/V, e.g. boundary=2+2:q8_0/q8_0");
      spec.boundary.first = number(item, val.substr(0, plus));
      spec.boundary.last = number(item, val.substr(plus + 1, colon - plus - 1));
      spec.boundary.codecs = pair(item, val.substr(colon + 1));
      if (spec.boundary.first + spec.boundary.last == 0) spec.boundary = BoundarySpec{};  // canonical "none"
    } else if (key == "layers") {
      if (!spec.layers.empty()) bad(item, "layers given twice");
      std::size_t p = 0;
      while (p <= val.size()) {
        const std::size_t semi = std::min(val.find(';', p), val.size());
        spec.layers.push_back(pair(item, val.substr(p, semi - p)));
        p = semi + 1;
      }
    } else if (key == "tier") {
      const auto colon = val.find(':');
      if (colon == std::string_view::npos) bad(item, "expected AFTER:K/V, e.g. tier=4096:q2_1/q2_1");
      spec.tiers.push_back(TierSpec{number(item, val.substr(0, colon)), pair(item, val.substr(colon + 1))});
    } else {
      bad(item, "unknown key '" + std::string(key) +
                    "' (known: k, v, window, sinks, heavy, precision, rollback, boundary, layers, tier)");
    }
  }
  return spec;
}
#endif  // KVQ_COMPILED_DEFINITIONS

}  // namespace kvq
