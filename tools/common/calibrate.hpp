// Per-layer bit allocation: the engine of `kvq calibrate` (and of `kvq-ppl --calibrate`).
//
// A cache spec with a `layers=` table can give every KV layer its own K and V codec; which
// ones is a question of where compression hurts. Calibration answers it in two steps.
//
// 1. Sensitivity. For each KV layer l, each side (K or V) and each candidate codec c, the
//    damage when only that layer's K (or V) is stored with c and every other stream stays
//    exact (f32), everything else of the spec (window, sinks) as it will be used. Damage is the
//    increase of a loss over the all-exact cache of the same spec, so the exact codec scores
//    exactly 0 by construction. Two sources fill the same table (SensitivityTable):
//    - real Q/K/V dumps (measure_dump_sensitivity): kv_eval.hpp's decoding-engine replay, the
//      loss being the pooled squared relative attention-output error of layer l (metric
//      "out": K and V errors both move it) or its mean attention KL (metric "kl": K only, a V
//      codec never changes the scores);
//    - a GGUF model (kvq-ppl --calibrate, examples/llama/layer_sensitivity.hpp): the mean NLL
//      per token over a text window.
// 2. Allocation. Additive model: the predicted damage of a full assignment is the sum of its
//    per-layer, per-side sensitivities (interactions between layers are ignored; that is the
//    model's assumption, checked by validation, not by construction). Each stream's bytes at
//    the target context come from the planner (kvq::plan_stream, the cache's own count rules),
//    and streams add up to plan_memory exactly, so the budget is met byte for byte. Choosing
//    one codec per stream with minimum summed damage within a byte budget is a multiple-choice
//    knapsack, solved exactly (choose_min_damage): dynamic programming over the Pareto front
//    of partial assignments (bytes, damage), one group of options per stream -- no
//    discretization of the budget, so the optimum is the true one for the given costs.
#pragma once

#include "kv_eval.hpp"

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace kvq::tools {

// Codecs a K stream may use: every codec kvq ships, and exact f32 / f16.
inline std::vector<std::string> default_key_codecs() {
  return {"f32", "q8_0", "q4_1", "q4_0", "pc4", "turbo4", "q3_1", "pc3", "turbo3", "q2_1", "pc2", "turbo2"};
}
// Codecs a V stream may use: the per-channel family is a K format (tiles of tokens per channel).
inline std::vector<std::string> default_value_codecs() {
  return {"f32", "q8_0", "q4_1", "q4_0", "turbo4", "q3_1", "turbo3", "q2_1", "turbo2"};
}

inline bool is_per_channel(const std::string& codec) { return codec.rfind("pc", 0) == 0; }

// Errc::invalid_argument for a codec the registry does not know (or f32/f16), or a
// per-channel codec offered for V.
inline void check_codecs(const std::vector<std::string>& codecs, kvq::StreamKind kind, std::size_t head_dim) {
  kvq::detail::require(!codecs.empty(), Errc::invalid_argument, "no candidate codecs");
  for (const auto& c : codecs) {
    if (c != "f32" && c != "f16") (void)kvq::make_codec(c, head_dim);  // names the known codecs when unknown
    kvq::detail::require(!(kind == kvq::StreamKind::value && is_per_channel(c)), Errc::invalid_argument,
                         "'" + c + "' is a per-channel K codec, not a V candidate");
  }
}

// damage[side][layer][codec]: side 0 = K, 1 = V; codec indices into codecs[side].
struct SensitivityTable {
  std::string source;  // what was measured, e.g. "dumps DIR" or "nll MODEL TEXT"
  std::string metric;  // "out", "kl" or "nll"
  std::size_t window = 0, sinks = 0;
  std::size_t q_heads = 0, kv_heads = 0, head_dim = 0;  // the measured model's attention shape
  std::vector<std::string> codecs[2];
  std::vector<std::vector<double>> damage[2];

  std::size_t n_layers() const { return damage[0].size(); }
  static int side(kvq::StreamKind kind) { return kind == kvq::StreamKind::key ? 0 : 1; }
};

// The spec measured for (layer, side, codec): every stream f32 but that one, window and sinks
// from `base`. With codec "f32" it is the all-exact reference spec itself.
inline kvq::CacheSpec single_stream_spec(const kvq::CacheSpec& base, std::size_t n_layers, std::size_t layer,
                                         kvq::StreamKind kind, const std::string& codec) {
  kvq::CacheSpec s = base;
  s.codecs = {"f32", "f32"};
  s.boundary = {};
  s.tiers.clear();
  s.layers.assign(n_layers, kvq::CodecPair{"f32", "f32"});
  (kind == kvq::StreamKind::key ? s.layers[layer].k : s.layers[layer].v) = codec;
  return s;
}

// The loss of layer `l` in one kv_eval measurement.
inline double dump_loss(const EvalStats& s, const std::string& metric) {
  if (metric == "kl") return s.kl_mean();
  return s.o_ref2 > 0 ? s.o_err2 / s.o_ref2 : 0.0;
}

// Sensitivity from real dumps: every (layer, side, codec) replayed through kv_eval's
// decoding-engine loop on that layer alone. `opt.layers` is ignored (all layers are measured).
inline SensitivityTable measure_dump_sensitivity(const KvDumps& dumps, const std::vector<std::string>& key_codecs,
                                                 const std::vector<std::string>& value_codecs,
                                                 const kvq::CacheSpec& base, EvalOptions opt,
                                                 const std::string& metric = "out") {
  kvq::detail::require(metric == "out" || metric == "kl", Errc::invalid_argument,
                       "the sensitivity metric is out or kl, got '" + metric + "'");
  check_codecs(key_codecs, kvq::StreamKind::key, dumps.head_dim);
  check_codecs(value_codecs, kvq::StreamKind::value, dumps.head_dim);
  SensitivityTable t;
  t.metric = metric;
  t.window = base.window;
  t.sinks = base.sinks;
  t.q_heads = dumps.q_heads;
  t.kv_heads = dumps.kv_heads;
  t.head_dim = dumps.head_dim;
  t.codecs[0] = key_codecs;
  t.codecs[1] = value_codecs;
  const std::size_t L = dumps.layers;
  for (int side = 0; side < 2; ++side) t.damage[side].assign(L, std::vector<double>(t.codecs[side].size(), 0.0));
  for (std::size_t l = 0; l < L; ++l) {
    opt.layers = {l};
    const auto ref = evaluate_cache(dumps, single_stream_spec(base, L, l, kvq::StreamKind::key, "f32"), opt);
    const double ref_loss = dump_loss(ref.layers[0], metric);
    for (int side = 0; side < 2; ++side) {
      const auto kind = side == 0 ? kvq::StreamKind::key : kvq::StreamKind::value;
      for (std::size_t c = 0; c < t.codecs[side].size(); ++c) {
        // f32 is measured too: the same spec as the reference, so exactly 0 (tested)
        const auto r = evaluate_cache(dumps, single_stream_spec(base, L, l, kind, t.codecs[side][c]), opt);
        t.damage[side][l][c] = dump_loss(r.layers[0], metric) - ref_loss;
      }
    }
  }
  return t;
}

// Text form: a header line, then "side layer codec damage" per cell (side K or V).
inline void write_sensitivity(std::ostream& out, const SensitivityTable& t) {
  out << "# kvq sensitivity v1 metric=" << t.metric << " window=" << t.window << " sinks=" << t.sinks
      << " layers=" << t.n_layers() << " q_heads=" << t.q_heads << " kv_heads=" << t.kv_heads
      << " head_dim=" << t.head_dim << " source=" << t.source << "\n";
  char buf[64];
  for (int side = 0; side < 2; ++side)
    for (std::size_t l = 0; l < t.n_layers(); ++l)
      for (std::size_t c = 0; c < t.codecs[side].size(); ++c) {
        std::snprintf(buf, sizeof buf, "%.9g", t.damage[side][l][c]);
        out << (side == 0 ? "K " : "V ") << l << ' ' << t.codecs[side][c] << ' ' << buf << "\n";
      }
}

// Errc::corrupt_data naming the line for anything but write_sensitivity's form (every layer
// must list the same codecs); Errc::io_error when `path` cannot be read.
inline SensitivityTable read_sensitivity(const std::string& path) {
  std::ifstream in(path);
  kvq::detail::require(bool(in), Errc::io_error, "cannot open sensitivity table '" + path + "'");
  auto bad = [&](std::size_t line, const std::string& why) {
    kvq::detail::fail(Errc::corrupt_data, path + ":" + std::to_string(line) + ": " + why);
  };
  SensitivityTable t;
  std::string line;
  if (!std::getline(in, line) || line.rfind("# kvq sensitivity v1 ", 0) != 0)
    bad(1, "not a kvq sensitivity table (expected '# kvq sensitivity v1 ...')");
  std::size_t n_layers = 0;
  {
    std::istringstream h(line.substr(21));
    std::string kv;
    while (h >> kv) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos) bad(1, "header item '" + kv + "' is not key=value");
      const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
      if (key == "source") {
        std::string rest;
        std::getline(h, rest);
        t.source = val + rest;
        break;
      }
      char* end = nullptr;
      const unsigned long long n = std::strtoull(val.c_str(), &end, 10);
      if (key == "metric") t.metric = val;
      else if (val.empty() || *end != '\0') bad(1, "header item '" + kv + "' needs a non-negative integer");
      else if (key == "window") t.window = n;
      else if (key == "sinks") t.sinks = n;
      else if (key == "layers") n_layers = n;
      else if (key == "q_heads") t.q_heads = n;
      else if (key == "kv_heads") t.kv_heads = n;
      else if (key == "head_dim") t.head_dim = n;
      else bad(1, "unknown header item '" + key + "'");
    }
  }
  if (n_layers == 0 || n_layers > (1u << 16)) bad(1, "header needs layers=N with N in 1..65536");
  if (t.q_heads == 0 || t.kv_heads == 0 || t.head_dim == 0 || t.q_heads % t.kv_heads != 0)
    bad(1, "header needs q_heads, kv_heads (dividing q_heads) and head_dim, all positive");
  for (auto& d : t.damage) d.assign(n_layers, {});
  std::vector<std::vector<std::string>> names[2];
  for (auto& n : names) n.assign(n_layers, {});
  std::size_t no = 1;
  while (std::getline(in, line)) {
    ++no;
    if (line.empty()) continue;
    std::istringstream r(line);
    std::string side, codec, extra;
    long long layer = -1;
    double damage = 0.0;
    if (!(r >> side >> layer >> codec >> damage) || (r >> extra)) bad(no, "expected 'K|V LAYER CODEC DAMAGE'");
    if (side != "K" && side != "V") bad(no, "side must be K or V, got '" + side + "'");
    if (layer < 0 || static_cast<std::size_t>(layer) >= n_layers)
      bad(no, "layer " + std::to_string(layer) + " outside 0.." + std::to_string(n_layers - 1));
    if (!std::isfinite(damage)) bad(no, "damage is not finite");
    const int s = side == "K" ? 0 : 1;
    names[s][layer].push_back(codec);
    t.damage[s][layer].push_back(damage);
  }
  for (int s = 0; s < 2; ++s) {
    t.codecs[s] = names[s][0];
    if (t.codecs[s].empty()) bad(no, std::string("no ") + (s == 0 ? "K" : "V") + " rows");
    for (std::size_t l = 1; l < n_layers; ++l)
      if (names[s][l] != t.codecs[s])
        bad(no, std::string(s == 0 ? "K" : "V") + " codecs of layer " + std::to_string(l) + " differ from layer 0's");
  }
  return t;
}

// One choice of a group in choose_min_damage.
struct Option {
  std::size_t cost = 0;  // bytes
  double damage = 0.0;
};

// For each group the index of one option, minimizing the summed damage subject to the summed
// cost <= budget (exact). Dynamic programming over the Pareto front: after each group only
// partial assignments that no other beats in both cost and damage are kept (sorted by cost,
// strictly falling damage), and those that cannot be completed within the budget (the cheapest
// options of the remaining groups) are dropped. Ties go to the cheaper, then to the earlier
// option. Errc::invalid_argument for an empty group; Errc::budget_exceeded when even the
// cheapest assignment costs more than `budget`.
inline std::vector<std::size_t> choose_min_damage(const std::vector<std::vector<Option>>& groups, std::size_t budget) {
  const std::size_t G = groups.size();
  std::vector<std::size_t> min_rest(G + 1, 0);  // cheapest completion of groups [g, G)
  for (std::size_t g = G; g-- > 0;) {
    kvq::detail::require(!groups[g].empty(), Errc::invalid_argument,
                         "choose_min_damage: group " + std::to_string(g) + " has no option");
    std::size_t m = std::numeric_limits<std::size_t>::max();
    for (const auto& o : groups[g]) m = std::min(m, o.cost);
    min_rest[g] = min_rest[g + 1] + m;
  }
  kvq::detail::require(min_rest[0] <= budget, Errc::budget_exceeded,
                       "the cheapest assignment needs " + std::to_string(min_rest[0]) + " bytes, the budget is " +
                           std::to_string(budget));
  struct State {
    std::size_t cost;
    double damage;
    std::size_t parent, option;  // index in the previous front, option of this group
  };
  std::vector<std::vector<State>> fronts(G + 1);
  fronts[0] = {State{0, 0.0, 0, 0}};
  for (std::size_t g = 0; g < G; ++g) {
    std::vector<State> next;
    for (std::size_t i = 0; i < fronts[g].size(); ++i)
      for (std::size_t o = 0; o < groups[g].size(); ++o) {
        const State& s = fronts[g][i];
        const std::size_t cost = s.cost + groups[g][o].cost;
        if (cost + min_rest[g + 1] > budget) continue;
        next.push_back(State{cost, s.damage + groups[g][o].damage, i, o});
      }
    std::stable_sort(next.begin(), next.end(), [](const State& a, const State& b) {
      return a.cost != b.cost ? a.cost < b.cost : a.damage < b.damage;
    });
    std::vector<State> front;
    for (const auto& s : next)
      if (front.empty() || s.damage < front.back().damage) front.push_back(s);
    kvq::detail::require(front.size() <= (std::size_t(1) << 24), Errc::out_of_range,
                         "choose_min_damage: Pareto front over 16M assignments");
    fronts[g + 1] = std::move(front);
  }
  std::vector<std::size_t> choice(G);
  std::size_t at = fronts[G].size() - 1;  // least damage: the front's damage falls with cost
  for (std::size_t g = G; g-- > 0;) {
    choice[g] = fronts[g + 1][at].option;
    at = fronts[g + 1][at].parent;
  }
  return choice;
}

// A budget and its pricing: bytes of the cache of `shape` at `context` tokens.
struct Pricing {
  kvq::ModelShape shape;  // the layer count must be the table's
  std::size_t context = 32768;
  kvq::CacheSpec base;    // window, sinks (and precision) of every priced spec
};

struct Allocation {
  kvq::CacheSpec spec;                   // base + the chosen layers= table
  std::vector<std::size_t> choice[2];    // per layer, index into table.codecs[side]
  double predicted_damage = 0.0;         // sum of the chosen sensitivities
  std::size_t bytes = 0, budget = 0;     // planner bytes at the context, the budget
  double bits_per_value = 0.0;           // planner bits/value at the context
};

// Bytes of every (side, layer, codec) stream of the table at the pricing.
inline std::vector<std::vector<std::vector<std::size_t>>> stream_costs(const SensitivityTable& t, const Pricing& p) {
  const std::size_t L = t.n_layers();
  kvq::detail::require(p.shape.n_kv_layers() == L, Errc::shape_mismatch,
                       "the priced shape has " + std::to_string(p.shape.n_kv_layers()) +
                           " KV layers, the sensitivity table " + std::to_string(L));
  std::vector<std::vector<std::vector<std::size_t>>> cost(2, std::vector<std::vector<std::size_t>>(L));
  std::map<std::pair<int, std::string>, std::size_t> memo;  // dense layers price alike
  for (int side = 0; side < 2; ++side) {
    const auto kind = side == 0 ? kvq::StreamKind::key : kvq::StreamKind::value;
    check_codecs(t.codecs[side], kind, p.shape.head_dim);
    for (std::size_t l = 0; l < L; ++l)
      for (const auto& codec : t.codecs[side]) {
        const bool dense = p.shape.kv_layers.empty();
        auto it = dense ? memo.find({side, codec}) : memo.end();
        if (it == memo.end()) {
          const auto spec = single_stream_spec(p.base, L, l, kind, codec);
          const std::size_t b = kvq::plan_stream(p.shape, spec, l, kind, p.context).total_bytes();
          if (!dense) {
            cost[side][l].push_back(b);
            continue;
          }
          it = memo.emplace(std::make_pair(side, codec), b).first;
        }
        cost[side][l].push_back(it->second);
      }
  }
  return cost;
}

// Bytes of a budget of `bits` per value at the pricing (K and V, every KV layer).
inline std::size_t bits_budget(const Pricing& p, double bits) {
  kvq::detail::require(std::isfinite(bits) && bits > 0, Errc::invalid_argument, "bits per value must be positive");
  const double values = double(p.context) * double(p.shape.n_kv_heads * p.shape.head_dim) * 2.0 * double(p.shape.n_kv_layers());
  return static_cast<std::size_t>(std::floor(bits * values / 8.0));
}

namespace detail {
// The Allocation of given per-layer choices; `spec` says how they are written (layers= table,
// uniform or boundary form), its bytes come from the planner.
inline Allocation priced(const SensitivityTable& t, const Pricing& p, std::size_t budget, const kvq::CacheSpec& spec,
                         const std::vector<std::size_t>& k, const std::vector<std::size_t>& v) {
  Allocation a;
  a.budget = budget;
  a.spec = spec;
  a.choice[0] = k;
  a.choice[1] = v;
  for (int side = 0; side < 2; ++side)
    for (std::size_t l = 0; l < t.n_layers(); ++l) a.predicted_damage += t.damage[side][l][a.choice[side][l]];
  const auto plan = kvq::plan_memory(p.shape, a.spec, p.context);
  a.bytes = plan.total.total_bytes();
  a.bits_per_value = plan.total.bits_per_value();
  return a;
}

inline kvq::CacheSpec plain_base(const Pricing& p) {
  kvq::CacheSpec s = p.base;
  s.boundary = {};
  s.tiers.clear();
  s.layers.clear();
  return s;
}

inline std::size_t cheapest(const std::vector<std::vector<Option>>& groups) {
  std::size_t sum = 0;
  for (const auto& g : groups) {
    std::size_t m = std::numeric_limits<std::size_t>::max();
    for (const auto& o : g) m = std::min(m, o.cost);
    sum += m;
  }
  return sum;
}
}  // namespace detail

// The least-damage assignment of the table's codecs within `budget` bytes at the pricing:
// a layers= table, default codecs k=/v= the most frequent choices (the table overrides them).
inline Allocation allocate(const SensitivityTable& t, const Pricing& p, std::size_t budget) {
  const std::size_t L = t.n_layers();
  const auto cost = stream_costs(t, p);
  std::vector<std::vector<Option>> groups;
  for (int side = 0; side < 2; ++side)
    for (std::size_t l = 0; l < L; ++l) {
      groups.emplace_back();
      for (std::size_t c = 0; c < t.codecs[side].size(); ++c) groups.back().push_back({cost[side][l][c], t.damage[side][l][c]});
    }
  std::vector<std::size_t> pick;
  try {
    pick = choose_min_damage(groups, budget);
  } catch (const kvq::Error& e) {
    if (e.code() != Errc::budget_exceeded) throw;
    const std::size_t c = detail::cheapest(groups);
    const double values = double(p.context) * double(p.shape.n_kv_heads * p.shape.head_dim) * 2.0 * double(L);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "the budget, %zu bytes (%.4f bits/value), is below the cheapest assignment of the "
                  "candidate codecs, %zu bytes (%.4f bits/value) at %zu tokens",
                  budget, 8.0 * double(budget) / values, c, 8.0 * double(c) / values, p.context);
    kvq::detail::fail(Errc::budget_exceeded, buf);
  }
  kvq::CacheSpec spec = detail::plain_base(p);
  spec.layers.assign(L, {});
  const std::vector<std::size_t> k(pick.begin(), pick.begin() + std::ptrdiff_t(L)), v(pick.begin() + std::ptrdiff_t(L), pick.end());
  for (int side = 0; side < 2; ++side) {
    std::map<std::string, std::size_t> count;
    for (std::size_t l = 0; l < L; ++l) {
      const std::string& name = t.codecs[side][(side == 0 ? k : v)[l]];
      (side == 0 ? spec.layers[l].k : spec.layers[l].v) = name;
      ++count[name];
    }
    std::string most;
    for (const auto& [name, n] : count)
      if (most.empty() || n > count[most]) most = name;
    (side == 0 ? spec.codecs.k : spec.codecs.v) = most;
  }
  return detail::priced(t, p, budget, spec, k, v);
}

// The least-damage spec with one K and one V codec on every layer (k=X,v=Y) within the budget,
// or with `first` + `last` boundary layers on their own pair (boundary=F+L:K/V) when
// first + last > 0; Errc::budget_exceeded when none fits. Exhaustive over the table's codecs.
inline Allocation best_layered(const SensitivityTable& t, const Pricing& p, std::size_t budget, std::size_t first = 0,
                               std::size_t last = 0) {
  const std::size_t L = t.n_layers(), nk = t.codecs[0].size(), nv = t.codecs[1].size();
  kvq::detail::require(first + last <= L, Errc::invalid_argument, "the boundary exceeds the layers");
  const bool boundary = first + last > 0;
  const auto cost = stream_costs(t, p);
  auto is_edge = [&](std::size_t l) { return l < first || l + last >= L; };
  Allocation best;
  bool found = false;
  const std::size_t nhk = boundary ? nk : 1, nhv = boundary ? nv : 1;
  for (std::size_t hk = 0; hk < nhk; ++hk)
    for (std::size_t hv = 0; hv < nhv; ++hv)
      for (std::size_t ck = 0; ck < nk; ++ck)
        for (std::size_t cv = 0; cv < nv; ++cv) {
          std::vector<std::size_t> k(L), v(L);
          std::size_t bytes = 0;
          double damage = 0.0;
          for (std::size_t l = 0; l < L; ++l) {
            k[l] = boundary && is_edge(l) ? hk : ck;
            v[l] = boundary && is_edge(l) ? hv : cv;
            bytes += cost[0][l][k[l]] + cost[1][l][v[l]];
            damage += t.damage[0][l][k[l]] + t.damage[1][l][v[l]];
          }
          if (bytes > budget || (found && damage >= best.predicted_damage)) continue;
          kvq::CacheSpec spec = detail::plain_base(p);
          spec.codecs = {t.codecs[0][ck], t.codecs[1][cv]};
          if (boundary) spec.boundary = kvq::BoundarySpec{first, last, {t.codecs[0][hk], t.codecs[1][hv]}};
          best = detail::priced(t, p, budget, spec, k, v);
          found = true;
        }
  kvq::detail::require(found, Errc::budget_exceeded,
                       std::string("no ") + (boundary ? "boundary" : "uniform") + " spec fits the budget");
  return best;
}

}  // namespace kvq::tools
