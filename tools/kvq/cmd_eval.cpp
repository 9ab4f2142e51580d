// kvq eval: attention error of cache configurations on real Q/K/V dumps (.npy).
//
// For each spec (--spec S and any positional spec strings) every layer's tokens are streamed
// through a kvq::Cache and, at every --stride-th position p, the query at p attends through the
// cache exactly as a decoding engine's step p would (see tools/common/kv_eval.hpp). Printed as
// markdown: per layer, K/V relative error (final cache state), raw-score relative error,
// attention-output relative error, mean and max KL(exact || cache) of the attention
// distributions, and K/V bits/value; then one summary row per spec.
//
// With --retrieval: the retrieval probe (tools/common/retrieval_probe.hpp) instead -- needles
// (real keys) at ages 16 .. 32K in long contexts chained from the dumps' real keys, queries
// aimed at them with a calibrated exact mass; per spec the needle's attention mass through the
// cache relative to exact, top-1 hit rate and attention-output error, by age bucket (and layer).
#include "cli.hpp"

#include "../common/kv_eval.hpp"
#include "../common/retrieval_probe.hpp"

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
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

std::vector<double> parse_doubles(const std::string& text, const char* what) {
  std::vector<double> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    kvq::detail::require(!item.empty() && end && *end == '\0', kvq::Errc::invalid_argument,
                         std::string("--") + what + " expects numbers separated by commas, got '" + item + "'");
    out.push_back(v);
    pos = comma + 1;
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bits/value of a spec on the Llama-3.2-3B shape at 32K tokens (what `kvq plan --model llama-3.2-3b` prints).
// A layers= table names the layers of the model it was made for: it is priced with Llama-3.2-3B's
// heads and head_dim on that many layers (its per-layer cost on Llama-3.2-3B, as `kvq calibrate
// --price-model llama-3.2-3b` prices it).
double llama_bits_32k(const kvq::CacheSpec& spec) {
  const std::size_t layers = spec.layers.empty() ? 28 : spec.layers.size();
  return kvq::plan_memory(kvq::ModelShape::dense(layers, 24, 8, 128, 32768), spec, 32768).total.bits_per_value();
}

std::string bucket_label(const kvq::tools::RetrievalProbes& pr, std::size_t b) {
  auto k = [](std::size_t x) { return x >= 1024 && x % 1024 == 0 ? std::to_string(x / 1024) + "K" : std::to_string(x); };
  return k(pr.bucket_lo[b]) + "-" + std::to_string(pr.bucket_hi[b] - 1);
}

int run_retrieval(const kvq::cli::Args& args, const std::string& dir, const std::vector<kvq::CacheSpec>& specs) {
  namespace kt = kvq::tools;
  kt::RetrievalOptions opt;
  const long long context = args.get_int("context", static_cast<long long>(opt.context)),
                  needles = args.get_int("needles", static_cast<long long>(opt.needles)),
                  seed = args.get_int("seed", static_cast<long long>(opt.seed));
  kvq::detail::require(context > 0 && context <= (1 << 24), kvq::Errc::invalid_argument, "--context must be positive");
  kvq::detail::require(needles > 0 && needles <= (1 << 20), kvq::Errc::invalid_argument, "--needles must be positive");
  kvq::detail::require(seed >= 0, kvq::Errc::invalid_argument, "--seed must be non-negative");
  opt.context = static_cast<std::size_t>(context);
  opt.needles = static_cast<std::size_t>(needles);
  opt.seed = static_cast<std::uint64_t>(seed);
  if (args.has("ages")) opt.ages = parse_list(args.require("ages"), "ages");
  if (args.has("masses")) opt.masses = parse_doubles(args.require("masses"), "masses");
  if (args.has("layers")) opt.layers = parse_list(args.require("layers"), "layers");
  opt.max_beta = args.get_double("max-beta", opt.max_beta);
  const long long observe = args.get_int("observe", 0), mention = args.get_int("mention-age", 0);
  kvq::detail::require(observe >= 0 && mention >= 0, kvq::Errc::invalid_argument,
                       "--observe and --mention-age are non-negative");
  opt.observe_every = static_cast<std::size_t>(observe);
  opt.mention_age = static_cast<std::size_t>(mention);
  kvq::detail::require(opt.max_beta > 0.0, kvq::Errc::invalid_argument, "--max-beta must be positive");
  opt.scale = args.get_double("scale", 0.0);
  kvq::detail::require(opt.scale >= 0.0, kvq::Errc::invalid_argument, "--scale must be positive (0: 1/sqrt(head_dim))");
  const bool per_layer = args.has("per-layer");

  const auto t_all = std::chrono::steady_clock::now();
  const auto dumps = kt::load_kv_dumps(dir);
  for (const auto& spec : specs)  // every refusal before the first line of output
    (void)kvq::Cache(kvq::ModelShape::dense(dumps.layers, dumps.q_heads, dumps.kv_heads, dumps.head_dim, opt.context),
                     spec);
  std::ofstream tsv;
  if (args.has("out")) {
    tsv.open(args.require("out"));
    kvq::detail::require(bool(tsv), kvq::Errc::io_error, "cannot write --out " + args.require("out"));
    tsv << "spec\tbits_llama32k\tmass\tage_lo\tage_hi\tlayer\tn\tmean_ratio\tp10_ratio\tmin_ratio\thit_rate\t"
           "exact_hit_rate\tout_rel\n";
  }
  const auto t_prep = std::chrono::steady_clock::now();
  const auto pr = kt::make_probes(dumps, opt);
  const double prep_sec = seconds_since(t_prep);
  double worst = 0.0;
  for (const auto& p : pr.probes) worst = std::max(worst, std::fabs(p.exact_mass - opt.masses[p.mass_index]));

  std::printf("kernels: %s (int8 dot product: %s)\n", kvq::kernels::target_name(), kvq::kernels::int8_dot_path());
  std::printf("retrieval probe on %s: %zu layers x %zu KV heads, contexts of %zu tokens chained from the dumps' "
              "real keys (%zu duplicate keys), %zu probes = %zu layers x %zu age buckets x %zu masses x %zu needles "
              "(needle draws refused: %zu out-projected by another key, %zu needing beta > %g |q_real|), seed %llu; "
              "calibration: max |exact mass - target| %.1e; %.1f s\n\n",
              dir.c_str(), pr.layer_ids.size(), dumps.kv_heads, opt.context, pr.duplicates, pr.probes.size(),
              pr.layer_ids.size(), opt.ages.size(), opt.masses.size(), opt.needles, pr.refused, pr.refused_beta,
              opt.max_beta, static_cast<unsigned long long>(opt.seed), worst, prep_sec);
  if (opt.observe_every || opt.mention_age)
    std::printf("while the context is built: %s%s%s (what heavy= judges tokens by)\n\n",
                opt.observe_every ? ("an attend with the real queries every " + std::to_string(opt.observe_every) +
                                     " steps").c_str()
                                  : "",
                opt.observe_every && opt.mention_age ? "; " : "",
                opt.mention_age ? ("each probe's query attends once when its needle is " +
                                   std::to_string(opt.mention_age) + " tokens old").c_str()
                                : "");
  std::fflush(stdout);

  std::vector<kt::RetrievalResult> results;
  for (const auto& spec : specs) {
    const auto t0 = std::chrono::steady_clock::now();
    results.push_back(kt::run_probes(dumps, pr, spec));
    std::fprintf(stderr, "retrieval: %s %.1f s\n", spec.to_string().c_str(), seconds_since(t0));
  }

  const std::size_t nb = opt.ages.size();
  auto header = [&](const char* first) {
    std::printf("| %s | bits/value (Llama-3.2-3B, 32K) |", first);
    for (std::size_t b = 0; b < nb; ++b) std::printf(" age %s |", bucket_label(pr, b).c_str());
    std::printf("\n|---|---|");
    for (std::size_t b = 0; b < nb; ++b) std::printf("---|");
    std::printf("\n");
  };
  using Cell = std::function<std::string(const kt::ProbeStats&)>;
  auto fmt = [](const char* f, double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return std::string(buf);
  };
  const Cell rel_mass = [&](const kt::ProbeStats& s) { return fmt("%.3f", s.mean_ratio) + fmt(" (%.2f)", s.p10_ratio); };
  const Cell hit = [&](const kt::ProbeStats& s) { return fmt("%.3f", s.hit_rate); };
  const Cell out_err = [&](const kt::ProbeStats& s) { return fmt("%.4f", s.out_rel); };
  struct Metric {
    const char* title;
    Cell cell;
  };
  const Metric metrics[] = {
      {"needle attention mass through the cache / exact: mean (10th percentile)", rel_mass},
      {"top-1 hit rate (the needle has the highest score through the cache)", hit},
      {"attention output relative error |o - o_exact| / |o_exact| (pooled)", out_err}};
  for (std::size_t mi = 0; mi < opt.masses.size(); ++mi) {
    for (const auto& m : metrics) {
      std::printf("exact needle mass %.2f: %s, %zu probes per cell\n\n", opt.masses[mi], m.title,
                  pr.layer_ids.size() * opt.needles);
      header("spec");
      for (std::size_t i = 0; i < specs.size(); ++i) {
        std::printf("| `%s` | %.3f |", specs[i].to_string().c_str(), llama_bits_32k(specs[i]));
        for (std::size_t b = 0; b < nb; ++b)
          std::printf(" %s |", m.cell(kt::probe_stats(pr, results[i], [&](const kt::Probe& p) {
                                  return p.mass_index == mi && p.bucket == b;
                                })).c_str());
        std::printf("\n");
      }
      std::printf("\n");
    }
    std::size_t exact_hits = 0, n = 0;
    for (const auto& p : pr.probes)
      if (p.mass_index == mi) exact_hits += p.exact_top1, ++n;
    std::printf("(exact attention: the needle is top-1 in %zu of %zu probes at mass %.2f)\n\n", exact_hits, n,
                opt.masses[mi]);
  }
  if (per_layer) {
    for (std::size_t mi = 0; mi < opt.masses.size(); ++mi)
      for (std::size_t i = 0; i < specs.size(); ++i) {
        std::printf("per layer, exact needle mass %.2f, `%s`: needle mass / exact, mean (10th percentile), %zu "
                    "probes per cell\n\n",
                    opt.masses[mi], specs[i].to_string().c_str(), opt.needles);
        std::printf("| layer |");
        for (std::size_t b = 0; b < nb; ++b) std::printf(" age %s |", bucket_label(pr, b).c_str());
        std::printf("\n|---|");
        for (std::size_t b = 0; b < nb; ++b) std::printf("---|");
        std::printf("\n");
        for (std::size_t L : pr.layer_ids) {
          std::printf("| %zu |", L);
          for (std::size_t b = 0; b < nb; ++b)
            std::printf(" %s |", rel_mass(kt::probe_stats(pr, results[i], [&](const kt::Probe& p) {
                                   return p.mass_index == mi && p.bucket == b && p.layer == L;
                                 })).c_str());
          std::printf("\n");
        }
        std::printf("\n");
      }
  }
  if (tsv) {
    for (std::size_t i = 0; i < specs.size(); ++i)
      for (std::size_t mi = 0; mi < opt.masses.size(); ++mi)
        for (std::size_t b = 0; b < nb; ++b)
          for (long li = -1; li < long(pr.layer_ids.size()); ++li) {
            const auto st = kt::probe_stats(pr, results[i], [&](const kt::Probe& p) {
              return p.mass_index == mi && p.bucket == b && (li < 0 || p.layer == pr.layer_ids[std::size_t(li)]);
            });
            tsv << specs[i].to_string() << '\t' << fmt("%.4f", llama_bits_32k(specs[i])) << '\t' << opt.masses[mi]
                << '\t' << pr.bucket_lo[b] << '\t' << pr.bucket_hi[b] << '\t'
                << (li < 0 ? std::string("all") : std::to_string(pr.layer_ids[std::size_t(li)])) << '\t' << st.n
                << '\t' << fmt("%.5f", st.mean_ratio) << '\t' << fmt("%.5f", st.p10_ratio) << '\t'
                << fmt("%.5f", st.min_ratio) << '\t' << fmt("%.4f", st.hit_rate) << '\t'
                << fmt("%.4f", st.exact_hit_rate) << '\t' << fmt("%.5f", st.out_rel) << '\n';
          }
  }
  std::printf("wall time %.1f s (probes %.1f s, %zu specs)\n", seconds_since(t_all), prep_sec, specs.size());
  return 0;
}

void print_row(const char* label, const kvq::tools::EvalStats& s) {
  std::printf("| %s | %.4f | %.4f | %.4f | %.4f | %.2e | %.2e | %.3f | %.3f |\n", label, s.k_rel(), s.v_rel(),
              s.score_rel(), s.out_rel(), s.kl_mean(), s.kl_max, s.k_bits(), s.v_bits());
}

int run(const kvq::cli::Args& args) {
  const std::string dir = args.get("dir", std::string(KVQ_SHARED_DIR) + "/data/kv-dumps/wt2-byte-a");
  std::vector<std::string> specs;
  if (args.has("spec")) specs.push_back(args.require("spec"));
  // Flags are followed by spec strings, which the option parser hands them as values.
  for (const char* flag : {"retrieval", "per-layer"})
    if (!args.get(flag).empty()) specs.push_back(args.get(flag));
  for (const auto& s : args.positional()) specs.push_back(s);
  if (specs.empty()) specs.push_back("k=q8_0,v=q8_0");
  std::vector<kvq::CacheSpec> parsed;
  for (const auto& s : specs) parsed.push_back(kvq::CacheSpec::parse(s));  // bad specs fail before any work
  if (args.has("retrieval")) return run_retrieval(args, dir, parsed);

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
  std::printf("kernels: %s (int8 dot product: %s)\n", kvq::kernels::target_name(), kvq::kernels::int8_dot_path());
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
    "[--tokens T] [--layers 0,7] [--scale X]; --retrieval: the retrieval probe (needles at ages 16..32K in "
    "contexts chained from the dumps' keys) [--context 36864] [--ages 16,64,256,1024,4096,16384,32768] "
    "[--masses 0.3,0.6,0.9] [--needles 16] [--seed 16] [--max-beta 8] [--layers ...] [--per-layer] [--out results.tsv] "
    "[--observe K: attend with the real queries every K-th step] [--mention-age A: each probe's query also attends "
    "when its needle is A tokens old]",
    run};

}  // namespace
