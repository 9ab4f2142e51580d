// kvq calibrate: per-layer K/V sensitivity per codec, then the least-damage per-layer codecs
// within a budget, printed as a spec with a layers= table (engine: tools/common/calibrate.hpp).
//
// Sensitivity comes from the real Q/K/V dumps (--dumps DIR, default the shared wt2-byte-a
// dumps) or from a table written earlier (--sensitivity FILE: `kvq calibrate --out FILE` or
// `kvq-ppl --calibrate FILE`, which measures NLL increases through the llama runner). The
// budget is --bits B per value (K and V, every layer) or --bytes N, priced by the planner at
// --context tokens on the measured model's shape, or with --price-model llama-3.2-3b on
// Llama-3.2-3B's heads and head_dim (per-layer cost equal to that model's; the layer count is
// the table's, since a layers= table names every layer).
#include "cli.hpp"

#include "../common/calibrate.hpp"

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#ifndef KVQ_SHARED_DIR
#define KVQ_SHARED_DIR "../shared"
#endif

namespace {

namespace kt = kvq::tools;

std::vector<std::string> parse_names(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    out.push_back(text.substr(pos, comma - pos));
    kvq::detail::require(!out.back().empty(), kvq::Errc::invalid_argument, "empty codec name in '" + text + "'");
    pos = comma + 1;
  }
  return out;
}

std::size_t non_negative(const kvq::cli::Args& args, const std::string& key, std::size_t fallback) {
  const long long v = args.get_int(key, static_cast<long long>(fallback));
  kvq::detail::require(v >= 0 && v <= (1LL << 30), kvq::Errc::invalid_argument,
                       "--" + key + " must be in 0..2^30, got " + std::to_string(v));
  return static_cast<std::size_t>(v);
}

void print_table(const kt::SensitivityTable& t, int side, const std::vector<std::size_t>& chosen) {
  std::printf("%s sensitivity (%s increase when only that layer's %s uses the codec; * chosen)\n\n",
              side == 0 ? "K" : "V", t.metric.c_str(), side == 0 ? "K" : "V");
  std::printf("| layer |");
  for (const auto& c : t.codecs[side]) std::printf(" %s |", c.c_str());
  std::printf("\n|---|");
  for (std::size_t c = 0; c < t.codecs[side].size(); ++c) std::printf("---|");
  std::printf("\n");
  for (std::size_t l = 0; l < t.n_layers(); ++l) {
    std::printf("| %zu |", l);
    for (std::size_t c = 0; c < t.codecs[side].size(); ++c)
      std::printf(" %.3e%s |", t.damage[side][l][c], chosen[l] == c ? "*" : "");
    std::printf("\n");
  }
  std::printf("\n");
}

int run(const kvq::cli::Args& args) {
  const auto t0 = std::chrono::steady_clock::now();
  kvq::CacheSpec base;
  base.window = non_negative(args, "window", 0);
  base.sinks = non_negative(args, "sinks", 0);
  // Budget first: a missing or contradictory one is refused before any measuring.
  kvq::detail::require(args.has("bits") != args.has("bytes"), kvq::Errc::invalid_argument,
                       "give the budget as --bits B (per value, K and V) or as --bytes N, one of them");
  const std::size_t context = non_negative(args, "context", 32768);
  kvq::detail::require(context > 0, kvq::Errc::invalid_argument, "--context must be positive");
  const std::string price_model = args.get("price-model", "measured");
  kvq::detail::require(price_model == "measured" || price_model == "llama-3.2-3b", kvq::Errc::invalid_argument,
                       "--price-model is measured (the calibrated model's shape) or llama-3.2-3b, got '" +
                           price_model + "'");

  kt::SensitivityTable table;
  std::function<kt::SensitivityTable()> measure;  // empty when the table is read from a file
  if (args.has("sensitivity")) {
    for (const char* key : {"dumps", "metric", "k-codecs", "v-codecs", "stride", "tokens"})
      kvq::detail::require(!args.has(key), kvq::Errc::invalid_argument,
                           std::string("--") + key + " is a measuring option; --sensitivity reads a measured table");
    table = kt::read_sensitivity(args.require("sensitivity"));
    auto same = [&](const char* key, std::size_t measured) {
      kvq::detail::require(!args.has(key) || non_negative(args, key, 0) == measured, kvq::Errc::invalid_argument,
                           std::string("--") + key + " differs from the table's " + key + "=" +
                               std::to_string(measured) + " (it was measured with that)");
    };
    same("window", table.window);
    same("sinks", table.sinks);
    base.window = table.window;
    base.sinks = table.sinks;
  } else {
    const std::string dir = args.get("dumps", std::string(KVQ_SHARED_DIR) + "/data/kv-dumps/wt2-byte-a");
    kt::EvalOptions opt;
    opt.stride = non_negative(args, "stride", 16);
    kvq::detail::require(opt.stride > 0, kvq::Errc::invalid_argument, "--stride must be positive");
    const std::string metric = args.get("metric", "out");
    kvq::detail::require(metric == "out" || metric == "kl", kvq::Errc::invalid_argument,
                         "--metric is out or kl, got '" + metric + "'");
    const auto k = args.has("k-codecs") ? parse_names(args.require("k-codecs")) : kt::default_key_codecs();
    const auto v = args.has("v-codecs") ? parse_names(args.require("v-codecs")) : kt::default_value_codecs();
    auto dumps = std::make_shared<const kt::KvDumps>(kt::load_kv_dumps(dir, non_negative(args, "tokens", 0)));
    // Until measured: the table's shape with zero damages, which is all that pricing and the
    // budget's feasibility depend on, so bad codecs and budgets are refused before the work.
    table.q_heads = dumps->q_heads, table.kv_heads = dumps->kv_heads, table.head_dim = dumps->head_dim;
    table.codecs[0] = k, table.codecs[1] = v;
    for (int side = 0; side < 2; ++side)
      table.damage[side].assign(dumps->layers, std::vector<double>(table.codecs[side].size(), 0.0));
    measure = [=] {
      auto t = kt::measure_dump_sensitivity(*dumps, k, v, base, opt, metric);
      t.source = "dumps " + dir + " tokens=" + std::to_string(dumps->tokens) + " stride=" + std::to_string(opt.stride);
      return t;
    };
  }

  kt::Pricing pricing;
  pricing.context = context;
  pricing.base = base;
  const std::size_t L = table.n_layers();
  pricing.shape = price_model == "llama-3.2-3b" ? kvq::ModelShape::dense(L, 24, 8, 128, context)
                                                : kvq::ModelShape::dense(L, table.q_heads, table.kv_heads, table.head_dim, context);
  const std::size_t budget =
      args.has("bits") ? kt::bits_budget(pricing, args.get_double("bits", 0.0)) : non_negative(args, "bytes", 0);
  if (measure) {
    (void)kt::allocate(table, pricing, budget);
    table = measure();
  }
  const double measure_sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args.has("out")) {
    std::ofstream out(args.require("out"));
    kvq::detail::require(bool(out), kvq::Errc::io_error, "cannot write --out " + args.require("out"));
    kt::write_sensitivity(out, table);
    kvq::detail::require(bool(out), kvq::Errc::io_error, "cannot write --out " + args.require("out"));
  }
  const auto a = kt::allocate(table, pricing, budget);

  std::printf("sensitivity: %s, metric %s, window %zu, sinks %zu (%.1f s)\n", table.source.c_str(), table.metric.c_str(),
              table.window, table.sinks, measure_sec);
  std::printf("pricing: %zu KV layers x %zu KV heads x head_dim %zu (%s) at %zu tokens; budget %zu bytes = %.4f "
              "bits/value\n\n",
              L, pricing.shape.n_kv_heads, pricing.shape.head_dim,
              price_model == "llama-3.2-3b" ? "Llama-3.2-3B's heads and head_dim" : "the measured model", context, budget,
              8.0 * double(budget) / double(kvq::plan_memory(pricing.shape, a.spec, context).total.values));
  print_table(table, 0, a.choice[0]);
  print_table(table, 1, a.choice[1]);
  std::printf("allocation: exact multiple-choice knapsack (DP over the Pareto front of bytes and damage), additive "
              "damage model (sum of the per-layer sensitivities)\n\n");
  std::printf("| candidate | spec | bytes at %zu | bits/value | predicted damage (%s) |\n|---|---|---|---|---|\n", context,
              table.metric.c_str());
  auto row = [&](const char* what, const kt::Allocation& x) {
    std::printf("| %s | `%s` | %zu | %.4f | %.4e |\n", what, x.spec.to_string().c_str(), x.bytes, x.bits_per_value,
                x.predicted_damage);
  };
  row("calibrated", a);
  auto optional_row = [&](const char* what, std::size_t first, std::size_t last) {
    try {
      row(what, kt::best_layered(table, pricing, budget, first, last));
    } catch (const kvq::Error& e) {
      if (e.code() != kvq::Errc::budget_exceeded) throw;
      std::printf("| %s | (none within the budget) | | | |\n", what);
    }
  };
  optional_row("best uniform", 0, 0);
  if (L >= 4) optional_row("best boundary=2+2", 2, 2);
  std::printf("\nspec %s\n", a.spec.to_string().c_str());
  std::printf("bits/value %.4f at %zu tokens (%zu of %zu budget bytes), predicted damage %.4e\n", a.bits_per_value,
              context, a.bytes, budget, a.predicted_damage);
  return 0;
}

const kvq::cli::Command reg{
    "calibrate",
    "per-layer K/V codec sensitivity, then the least-damage layers= spec within a budget: (--bits B [--context "
    "32768] | --bytes N) [--window N --sinks N] [--price-model measured|llama-3.2-3b]; sensitivity from dumps "
    "[--dumps DIR] [--metric out|kl] [--stride 16] [--tokens T] [--k-codecs a,b] [--v-codecs a,b] [--out FILE], "
    "or --sensitivity FILE (kvq-ppl --calibrate, or an earlier --out)",
    run};

}  // namespace
