// A kvq::ModelShape from a GGUF model's metadata, for `kvq plan --gguf`.
//
// Keys read (llama.cpp's convention, ARCH = general.architecture):
//   ARCH.block_count               layers
//   ARCH.attention.head_count      query heads (a per-layer array: its largest entry)
//   ARCH.attention.head_count_kv   KV heads; absent = head_count (multi-head attention);
//                                  a per-layer array marks hybrids: layers with 0 KV heads
//                                  (recurrent/SSM layers) have no cache
//   ARCH.attention.key_length      head_dim; absent = ARCH.embedding_length / head_count
//   ARCH.context_length            the trained context (the planner's default context)
// A missing required key is Errc::invalid_argument naming the key and the file.
#pragma once

#include "gguf.hpp"

#include <kvq/cache/model_shape.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq::tools {

struct GgufModel {
  std::string name;          // general.name, else the architecture
  std::string architecture;  // general.architecture
  ModelShape shape;          // max_context = ARCH.context_length
};

namespace detail {
// A count that may be one integer or one integer per layer.
inline std::vector<std::uint64_t> per_layer(const GgufFile& f, const std::string& key, std::size_t n_layers) {
  const GgufValue& v = f.get(key);
  std::vector<std::uint64_t> out;
  if (const auto* a = std::get_if<GgufValue::Array>(&v.value)) {
    kvq::detail::require(a->size() == n_layers, Errc::invalid_argument,
                         "'" + key + "' has " + std::to_string(a->size()) + " entries for " +
                             std::to_string(n_layers) + " layers");
    for (std::size_t i = 0; i < a->size(); ++i) {
      const GgufValue e = a->at(i);
      kvq::detail::require(e.is_integer(), Errc::invalid_argument, "'" + key + "' is not an integer array");
      out.push_back(std::holds_alternative<std::uint64_t>(e.value)
                        ? std::get<std::uint64_t>(e.value)
                        : static_cast<std::uint64_t>(std::max<std::int64_t>(0, std::get<std::int64_t>(e.value))));
    }
  } else {
    out.assign(n_layers, f.get_uint(key));
  }
  return out;
}
}  // namespace detail

inline GgufModel gguf_model(const GgufFile& f, const std::string& file_name) {
  auto need = [&](const std::string& key) {
    kvq::detail::require(f.has(key), Errc::invalid_argument,
                         file_name + ": GGUF metadata key '" + key + "' is missing (kvq plan needs it)");
    return key;
  };
  GgufModel m;
  m.architecture = f.get_string(need("general.architecture"));
  m.name = f.has("general.name") ? f.get_string("general.name") : m.architecture;
  const std::string a = m.architecture + ".";
  const std::size_t layers = static_cast<std::size_t>(f.get_uint(need(a + "block_count")));
  kvq::detail::require(layers > 0 && layers <= 4096, Errc::invalid_argument,
                       file_name + ": " + a + "block_count " + std::to_string(layers) + " is not in 1..4096");
  const auto heads = detail::per_layer(f, need(a + "attention.head_count"), layers);
  const auto kv = f.has(a + "attention.head_count_kv") ? detail::per_layer(f, a + "attention.head_count_kv", layers)
                                                       : heads;
  std::size_t n_q = 0, n_kv = 0;
  std::vector<std::size_t> kv_layers;
  for (std::size_t l = 0; l < layers; ++l) {
    if (kv[l] == 0) continue;  // no attention on this layer
    kv_layers.push_back(l);
    kvq::detail::require(n_kv == 0 || n_kv == kv[l], Errc::invalid_argument,
                         file_name + ": KV heads differ between attention layers (" + std::to_string(n_kv) + " vs " +
                             std::to_string(kv[l]) + "); kvq's ModelShape has one count");
    n_kv = static_cast<std::size_t>(kv[l]);
    n_q = std::max<std::size_t>(n_q, static_cast<std::size_t>(heads[l]));
  }
  kvq::detail::require(!kv_layers.empty(), Errc::invalid_argument, file_name + ": no layer has attention");
  std::size_t head_dim = 0;
  if (f.has(a + "attention.key_length")) {
    head_dim = static_cast<std::size_t>(f.get_uint(a + "attention.key_length"));
  } else {
    const std::uint64_t embd = f.get_uint(need(a + "embedding_length"));
    kvq::detail::require(n_q > 0 && embd % n_q == 0, Errc::invalid_argument,
                         file_name + ": " + a + "embedding_length " + std::to_string(embd) +
                             " is not a multiple of the head count " + std::to_string(n_q));
    head_dim = static_cast<std::size_t>(embd / n_q);
  }
  const std::size_t context = static_cast<std::size_t>(f.get_uint(need(a + "context_length")));
  m.shape = ModelShape::dense(layers, n_q, n_kv, head_dim, context);
  if (kv_layers.size() != layers) m.shape.kv_layers = kv_layers;
  m.shape.validate();
  return m;
}

}  // namespace kvq::tools
