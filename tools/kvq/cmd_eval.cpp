// kvq eval: attention error of cache configurations on real Q/K/V dumps (.npy).
//
// For each spec (--spec S and any positional spec strings) every layer's tokens are streamed
// through a kvq::Cache and, at every --stride-th position p, the query at p attends through the
// cache exactly as a decoding engine's step p would (see tools/common/kv_eval.hpp). Printed as
// markdown: per layer, K/V relative error (final cache state), raw-score relative error,
// attention-output relative error, mean and max KL(exact || cache) of the attention
// distributions, and K/V bits/value; then one summary row per spec.
#include "cli.hpp"

#include "../common/kv_eval.hpp"

#include <kvq/cache/cache_spec.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#ifndef KVQ_SHARED_DIR
#define KVQ_SHARED_DIR "../shared"
#endif

namespace {

std::vector<std::size_t> parse_list(const std::string& text, const char* what) {
  std::vector<std::size_t> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    kvq::detail::require(!item.empty() && end && *end == '\0' && item[0] != '-', kvq::Errc::invalid_argument,
                         std::string("--") + what + " expects non-negative integers separated by commas, got '" +
                             item + "'");
    out.push_back(static_cast<std::size_t>(v));
    pos = comma + 1;
  }
  return out;
}

void print_row(const char* label, const kvq::tools::EvalStats& s) {
  std::printf("| %s | %.4f | %.4f | %.4f | %.4f | %.2e | %.2e | %.3f | %.3f |\n", label, s.k_rel(), s.v_rel(),
              s.score_rel(), s.out_rel(), s.kl_mean(), s.kl_max, s.k_bits(), s.v_bits());
}

int run(const kvq::cli::Args& args) {
  const std::string dir = args.get("dir", std::string(KVQ_SHARED_DIR) + "/data/kv-dumps/wt2-byte-a");
  std::vector<std::string> specs;
  if (args.has("spec")) specs.push_back(args.require("spec"));
  for (const auto& s : args.positional()) specs.push_back(s);
  if (specs.empty()) specs.push_back("k=q8_0,v=q8_0");
  std::vector<kvq::CacheSpec> parsed;
  for (const auto& s : specs) parsed.push_back(kvq::CacheSpec::parse(s));  // bad specs fail before any work

  kvq::tools::EvalOptions opt;
  const long long stride = args.get_int("stride", 16), tokens = args.get_int("tokens", 0);
  kvq::detail::require(stride > 0 && stride <= (1 << 24), kvq::Errc::invalid_argument, "--stride must be positive");
  kvq::detail::require(tokens >= 0, kvq::Errc::invalid_argument, "--tokens must be non-negative (0: all)");
  opt.stride = static_cast<std::size_t>(stride);
  opt.scale = static_cast<float>(args.get_double("scale", 0.0));
  kvq::detail::require(opt.scale >= 0.0f, kvq::Errc::invalid_argument, "--scale must be positive (0: 1/sqrt(head_dim))");
  if (args.has("layers")) opt.layers = parse_list(args.require("layers"), "layers");

  const auto dumps = kvq::tools::load_kv_dumps(dir, static_cast<std::size_t>(tokens));
  // Everything that can be refused is checked before the first line of output.
  for (const auto& spec : parsed)
    (void)kvq::Cache(kvq::ModelShape::dense(dumps.layers, dumps.q_heads, dumps.kv_heads, dumps.head_dim, dumps.tokens),
                     spec);
  for (std::size_t l : opt.layers)
    kvq::detail::require(l < dumps.layers, kvq::Errc::out_of_range,
                         "--layers: layer " + std::to_string(l) + " is out of range (the dump has " +
                             std::to_string(dumps.layers) + " layers)");
  std::printf("kernels: %s\n", kvq::kernels::target_name());
  std::printf("dumps %s: %zu layers, %zu q heads, %zu KV heads (group %zu), %zu tokens, head_dim %zu; "
              "queries every %zu positions (and the last), scale %s\n\n",
              dir.c_str(), dumps.layers, dumps.q_heads, dumps.kv_heads, dumps.q_heads / dumps.kv_heads, dumps.tokens,
              dumps.head_dim, opt.stride, opt.scale > 0 ? std::to_string(opt.scale).c_str() : "1/sqrt(head_dim)");

  const char* header =
      "| %s | K rel err | V rel err | score rel err | output rel err | KL mean | KL max | K bits/value | V bits/value |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  std::vector<kvq::tools::EvalResult> results;
  for (const auto& spec : parsed) {
    const auto t0 = std::chrono::steady_clock::now();
    results.push_back(kvq::tools::evaluate_cache(dumps, spec, opt));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& r = results.back();
    std::printf("spec %s (%.1f s)\n\n", spec.to_string().c_str(), sec);
    std::printf(header, "layer");
    for (std::size_t i = 0; i < r.layers.size(); ++i) print_row(std::to_string(r.layer_ids[i]).c_str(), r.layers[i]);
    print_row("all", r.total);
    std::printf("\n");
    std::fflush(stdout);
  }
  if (results.size() > 1) {
    std::printf("summary (all layers)\n\n");
    std::printf(header, "spec");
    for (const auto& r : results) print_row(("`" + r.spec.to_string() + "`").c_str(), r.total);
  }
  return 0;
}

const kvq::cli::Command reg{
    "eval",
    "attention error of cache specs on Q/K/V .npy dumps: --spec S [more specs] [--dir DIR] [--stride 16] "
    "[--tokens T] [--layers 0,7] [--scale X]",
    run};

}  // namespace
