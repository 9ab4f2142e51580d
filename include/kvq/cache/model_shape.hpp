// ModelShape: the attention geometry a cache is sized for.
//
// Hybrid models (Qwen3.5: Gated-Delta-Net layers with full attention only on
// every 4th layer) have a K/V cache on a subset of layers. Everything that
// picks a codec by depth counts *KV layers* (their ordinal among the layers
// that have a cache), never raw layer indices: a raw-index boundary rule
// upgrades 1 of 16 KV layers on Qwen3.5-27B instead of 4 (seed 004).
#pragma once

#include <kvq/core/error.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace kvq {

struct ModelShape {
  std::size_t n_layers = 0;
  std::vector<std::size_t> kv_layers;  // layers with a K/V cache, ascending; empty = all
  std::size_t n_q_heads = 0;
  std::size_t n_kv_heads = 0;
  std::size_t head_dim = 0;
  std::size_t max_context = 0;  // tokens per layer

  // A pure-attention model: every layer has a cache.
  static ModelShape dense(std::size_t n_layers, std::size_t n_q_heads, std::size_t n_kv_heads,
                          std::size_t head_dim, std::size_t max_context) {
    return ModelShape{n_layers, {}, n_q_heads, n_kv_heads, head_dim, max_context};
  }
  // A hybrid model with attention on every `every`-th layer, starting at
  // `first` (Qwen3.5: every 4, first 3 -> layers 3, 7, 11, ...).
  static ModelShape hybrid(std::size_t n_layers, std::size_t every, std::size_t n_q_heads,
                           std::size_t n_kv_heads, std::size_t head_dim, std::size_t max_context,
                           std::size_t first = static_cast<std::size_t>(-1)) {
    detail::require(every > 0, Errc::invalid_argument, "ModelShape::hybrid: every must be positive");
    if (first == static_cast<std::size_t>(-1)) first = every - 1;
    ModelShape s{n_layers, {}, n_q_heads, n_kv_heads, head_dim, max_context};
    for (std::size_t l = first; l < n_layers; l += every) s.kv_layers.push_back(l);
    detail::require(!s.kv_layers.empty(), Errc::invalid_argument,
                    "ModelShape::hybrid: no layer has a KV cache (first " + std::to_string(first) +
                        " >= n_layers " + std::to_string(n_layers) + ")");
    return s;
  }

  // Errc::invalid_argument naming the first inconsistency.
  void validate() const {
    auto bad = [](const std::string& m) { detail::fail(Errc::invalid_argument, "ModelShape: " + m); };
    if (n_layers == 0) bad("n_layers is 0");
    if (n_q_heads == 0) bad("n_q_heads is 0");
    if (n_kv_heads == 0) bad("n_kv_heads is 0");
    if (head_dim == 0) bad("head_dim is 0");
    if (max_context == 0) bad("max_context is 0");
    if (n_q_heads % n_kv_heads != 0)
      bad("n_q_heads " + std::to_string(n_q_heads) + " is not a multiple of n_kv_heads " +
          std::to_string(n_kv_heads));
    for (std::size_t i = 0; i < kv_layers.size(); ++i) {
      if (kv_layers[i] >= n_layers)
        bad("kv_layers[" + std::to_string(i) + "] = " + std::to_string(kv_layers[i]) +
            " is out of range (n_layers " + std::to_string(n_layers) + ")");
      if (i > 0 && kv_layers[i] == kv_layers[i - 1])
        bad("kv_layers lists layer " + std::to_string(kv_layers[i]) + " twice");
      if (i > 0 && kv_layers[i] < kv_layers[i - 1])
        bad("kv_layers must be ascending (layer " + std::to_string(kv_layers[i]) + " after " +
            std::to_string(kv_layers[i - 1]) + ")");
    }
  }

  std::size_t n_kv_layers() const noexcept { return kv_layers.empty() ? n_layers : kv_layers.size(); }
  std::size_t group_size() const noexcept { return n_kv_heads ? n_q_heads / n_kv_heads : 0; }

  // Ordinal of `layer` among the KV layers, -1 if the layer has no cache or is out of range.
  long kv_ordinal(std::size_t layer) const noexcept {
    if (layer >= n_layers) return -1;
    if (kv_layers.empty()) return static_cast<long>(layer);
    auto it = std::lower_bound(kv_layers.begin(), kv_layers.end(), layer);
    return it != kv_layers.end() && *it == layer ? static_cast<long>(it - kv_layers.begin()) : -1;
  }
  // The raw layer index of KV ordinal `ordinal` (< n_kv_layers()).
  std::size_t kv_layer(std::size_t ordinal) const noexcept {
    return kv_layers.empty() ? ordinal : kv_layers[ordinal];
  }

  friend bool operator==(const ModelShape&, const ModelShape&) = default;
};

}  // namespace kvq
