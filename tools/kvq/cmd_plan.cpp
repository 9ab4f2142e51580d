// kvq plan: bytes and bits/value of cache configurations at given context lengths.
//
// Runs the cache's own count rules (kvq::plan_memory), so the numbers are what
// a kvq::Cache of that shape and spec holds at that length, byte for byte.
// Configurations: --spec S and any further positional spec strings.
#include "cli.hpp"
#include "gguf_shape.hpp"  // tools/common

#include <kvq/cache/memory.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Preset {
  const char* name;
  std::size_t layers, q_heads, kv_heads, head_dim;
};
constexpr Preset kPresets[] = {
    {"llama-3.2-3b", 28, 24, 8, 128},
    {"wt2-byte-a", 8, 8, 2, 64},
};

std::vector<std::size_t> parse_contexts(const std::string& text) {
  std::vector<std::size_t> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    kvq::detail::require(!item.empty() && end && *end == '\0' && v > 0 && item[0] != '-', kvq::Errc::invalid_argument,
                         "--context expects positive integers separated by commas, got '" + item + "'");
    out.push_back(static_cast<std::size_t>(v));
    pos = comma + 1;
  }
  return out;
}

std::size_t positive(const kvq::cli::Args& args, const std::string& key, std::size_t fallback) {
  const long long v = args.get_int(key, static_cast<long long>(fallback));
  kvq::detail::require(v > 0 && v <= (1LL << 20), kvq::Errc::invalid_argument,
                       "--" + key + " must be in 1..1048576, got " + std::to_string(v));
  return static_cast<std::size_t>(v);
}

int run(const kvq::cli::Args& args) {
  Preset p{"custom", 0, 0, 0, 0};
  std::optional<kvq::tools::GgufModel> gguf;
  std::string gguf_label;
  if (args.has("gguf")) {
    kvq::detail::require(!args.has("model"), kvq::Errc::invalid_argument, "give --gguf or --model, not both");
    const std::string path = args.require("gguf");
    gguf = kvq::tools::gguf_model(kvq::tools::GgufFile::open(path), path);
    gguf_label = gguf->name + " (" + path + ")";
    p = Preset{gguf_label.c_str(), gguf->shape.n_layers, gguf->shape.n_q_heads, gguf->shape.n_kv_heads,
               gguf->shape.head_dim};
  } else if (args.has("model")) {
    const std::string name = args.require("model");
    bool found = false;
    std::string known;
    for (const auto& m : kPresets) {
      known += (known.empty() ? "" : ", ") + std::string(m.name);
      if (name == m.name) p = m, found = true;
    }
    kvq::detail::require(found, kvq::Errc::invalid_argument, "unknown --model '" + name + "' (known: " + known + ")");
  } else {
    for (const char* key : {"layers", "q-heads", "kv-heads", "head-dim"})
      kvq::detail::require(args.has(key), kvq::Errc::invalid_argument,
                           std::string("missing --") + key + " (or give --model, e.g. llama-3.2-3b, or --gguf MODEL.gguf)");
  }
  const std::vector<std::size_t> contexts =
      parse_contexts(args.get("context", gguf ? std::to_string(gguf->shape.max_context) : "32768,131072"));
  std::size_t max_context = 0;
  for (auto c : contexts) max_context = std::max(max_context, c);
  kvq::ModelShape shape = kvq::ModelShape::dense(positive(args, "layers", p.layers), positive(args, "q-heads", p.q_heads),
                                                 positive(args, "kv-heads", p.kv_heads),
                                                 positive(args, "head-dim", p.head_dim), max_context);
  if (gguf && !gguf->shape.kv_layers.empty()) shape.kv_layers = gguf->shape.kv_layers;  // the file's hybrid layout
  if (args.has("kv-every"))  // hybrid: attention on every N-th layer (N-1, 2N-1, ...)
    shape = kvq::ModelShape::hybrid(shape.n_layers, positive(args, "kv-every", 1), shape.n_q_heads, shape.n_kv_heads,
                                    shape.head_dim, max_context);
  shape.validate();

  std::vector<std::string> specs;
  if (args.has("spec")) specs.push_back(args.require("spec"));
  for (const auto& s : args.positional()) specs.push_back(s);
  if (specs.empty()) specs.push_back("k=q8_0,v=q8_0");
  std::vector<kvq::CacheSpec> parsed;
  for (const auto& s : specs) {
    parsed.push_back(kvq::CacheSpec::parse(s));
    parsed.back().validate(shape);
  }

  // Everything is computed before printing, so a bad spec is one line on stderr and nothing on stdout.
  std::vector<std::vector<kvq::MemoryUse>> totals(contexts.size());
  for (std::size_t c = 0; c < contexts.size(); ++c)
    for (const auto& spec : parsed) totals[c].push_back(kvq::plan_memory(shape, spec, contexts[c]).total);

  std::printf("model: %s, %zu layers (%zu with a KV cache), %zu q heads, %zu KV heads, head_dim %zu\n", p.name,
              shape.n_layers, shape.n_kv_layers(), shape.n_q_heads, shape.n_kv_heads, shape.head_dim);
  std::printf("%-56s %10s %16s %10s %10s %10s %8s\n", "spec", "context", "bytes", "GiB", "bits/val", "payload", "vs fp16");
  for (std::size_t c = 0; c < contexts.size(); ++c) {
    for (std::size_t i = 0; i < parsed.size(); ++i) {
      const auto& r = totals[c][i];
      std::printf("%-56s %10zu %16zu %10.3f %10.4f %10.4f %7.2fx\n", parsed[i].to_string().c_str(), contexts[c],
                  r.total_bytes(), double(r.total_bytes()) / double(1ull << 30), r.bits_per_value(),
                  r.payload_bits_per_value(), double(r.fp16_bytes()) / double(r.total_bytes()));
    }
  }
  if (args.has("per-layer")) {
    for (std::size_t i = 0; i < parsed.size(); ++i) {
      const auto r = kvq::plan_memory(shape, parsed[i], contexts.front());
      std::printf("\nper layer at %zu tokens: %s\n%6s %8s %14s %10s\n", contexts.front(), parsed[i].to_string().c_str(),
                  "layer", "codecs", "bytes", "bits/val");
      for (std::size_t o = 0; o < r.layers.size(); ++o) {
        const auto c = parsed[i].layer_codecs(shape, o);
        std::printf("%6zu %8s %14zu %10.4f\n", shape.kv_layer(o), (c.k + "/" + c.v).c_str(), r.layers[o].total_bytes(),
                    r.layers[o].bits_per_value());
      }
    }
  }
  return 0;
}

const kvq::cli::Command reg{"plan",
                            "cache memory at --context N[,N...] for --spec S (and positional specs); --gguf MODEL.gguf "
                            "(shape, hybrid layers and context from its metadata), --model llama-3.2-3b, or "
                            "--layers/--q-heads/--kv-heads/--head-dim [--kv-every N] [--per-layer]",
                            run};
}  // namespace
