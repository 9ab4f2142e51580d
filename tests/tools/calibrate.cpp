// Tests of tools/common/calibrate.hpp, the engine of `kvq calibrate`: the allocator is the exact
// optimum of brute-force enumeration on random instances and never exceeds its budget; an
// allocation's spec round-trips through CacheSpec::parse and the planner prices it at exactly
// the bytes the allocator counted, within the budget; the exact codec's measured sensitivity is
// 0 and compression's is positive; the table's text form round-trips; bad input is a clear
// kvq::Error.
#include "kvq_test.hpp"
#include "support/synthetic_dumps.hpp"

#include "calibrate.hpp"

#include <kvq/core/rng.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <limits>
#include <sstream>

namespace kt = kvq::tools;

namespace {

// Minimum damage over every assignment within the budget, by enumeration (inf if none).
double brute_force(const std::vector<std::vector<kt::Option>>& groups, std::size_t budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<std::size_t> idx(groups.size(), 0);
  for (;;) {
    std::size_t cost = 0;
    double damage = 0.0;
    for (std::size_t g = 0; g < groups.size(); ++g) cost += groups[g][idx[g]].cost, damage += groups[g][idx[g]].damage;
    if (cost <= budget) best = std::min(best, damage);
    std::size_t g = 0;
    while (g < groups.size() && ++idx[g] == groups[g].size()) idx[g++] = 0;
    if (g == groups.size()) return best;
  }
}

kvq::Errc error_code(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvq::Error& e) {
    return e.code();
  }
  FAIL("no kvq::Error thrown");
  return kvq::Errc::invalid_argument;
}

// A table with made-up damages over real codec names (the allocator does not care where
// damages come from); damage falls with bits, more steeply on some layers.
kt::SensitivityTable made_up_table(std::size_t layers, kvq::Rng& rng) {
  kt::SensitivityTable t;
  t.metric = "out";
  t.q_heads = 4, t.kv_heads = 2, t.head_dim = 64;
  t.codecs[0] = {"f32", "q8_0", "pc4", "turbo3", "q2_1", "turbo2"};
  t.codecs[1] = {"f32", "q4_0", "turbo3", "turbo2"};
  const std::vector<double> k_base{0.0, 1e-5, 1e-3, 3e-3, 2e-2, 8e-3}, v_base{0.0, 1e-3, 4e-3, 1e-2};
  for (int side = 0; side < 2; ++side) {
    const auto& b = side == 0 ? k_base : v_base;
    t.damage[side].assign(layers, {});
    for (std::size_t l = 0; l < layers; ++l) {
      const double w = 0.2 + 3.0 * rng.uniform();
      for (double x : b) t.damage[side][l].push_back(x * w);
    }
  }
  return t;
}

}  // namespace

TEST_CASE("calibrate: the allocator is the exact optimum of brute force and never exceeds the budget",
          "[tools][calibrate]") {
  kvq::Rng rng(2026);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t G = 1 + std::size_t(rng.uniform() * 5);
    std::vector<std::vector<kt::Option>> groups(G);
    std::size_t cheapest = 0, dearest = 0;
    for (auto& g : groups) {
      const std::size_t n = 1 + std::size_t(rng.uniform() * 4);
      std::size_t lo = std::numeric_limits<std::size_t>::max(), hi = 0;
      for (std::size_t i = 0; i < n; ++i) {
        // Small integer costs make ties and equal-cost options common; damages may be negative.
        g.push_back({std::size_t(rng.uniform() * 12), rng.uniform() * 10.0 - (trial % 3 == 0 ? 2.0 : 0.0)});
        lo = std::min(lo, g.back().cost), hi = std::max(hi, g.back().cost);
      }
      cheapest += lo, dearest += hi;
    }
    const std::size_t budget = cheapest + std::size_t(rng.uniform() * double(dearest - cheapest + 2));
    const auto pick = kt::choose_min_damage(groups, budget);
    REQUIRE(pick.size() == G);
    std::size_t cost = 0;
    double damage = 0.0;
    for (std::size_t g = 0; g < G; ++g) {
      REQUIRE(pick[g] < groups[g].size());
      cost += groups[g][pick[g]].cost;
      damage += groups[g][pick[g]].damage;
    }
    CHECK(cost <= budget);
    CHECK(damage == Approx(brute_force(groups, budget)).margin(1e-12));
    if (cheapest > 0)
      CHECK(error_code([&] { (void)kt::choose_min_damage(groups, cheapest - 1); }) == kvq::Errc::budget_exceeded);
  }
  CHECK(error_code([] { (void)kt::choose_min_damage({{{1, 0.0}}, {}}, 10); }) == kvq::Errc::invalid_argument);
  CHECK(kt::choose_min_damage({}, 0).empty());
}

TEST_CASE("calibrate: allocations round-trip through CacheSpec::parse and price within the budget",
          "[tools][calibrate]") {
  kvq::Rng rng(16);
  for (std::size_t layers : {1u, 2u, 3u}) {
    const auto t = made_up_table(layers, rng);
    kt::Pricing p;
    p.context = 4096;
    p.base = kvq::CacheSpec::parse("window=128,sinks=4");
    p.shape = kvq::ModelShape::dense(layers, t.q_heads, t.kv_heads, t.head_dim, p.context);
    const auto cost = kt::stream_costs(t, p);
    std::size_t cheapest = 0;
    for (int side = 0; side < 2; ++side)
      for (std::size_t l = 0; l < layers; ++l) cheapest += *std::min_element(cost[side][l].begin(), cost[side][l].end());
    for (double bits : {2.4, 3.0, 3.3, 4.5, 9.0, 40.0}) {
      const std::size_t budget = kt::bits_budget(p, bits);
      if (budget < cheapest) {  // turbo2 K and V with a 132-token exact share: 3.21 bits/value
        CHECK(error_code([&] { (void)kt::allocate(t, p, budget); }) == kvq::Errc::budget_exceeded);
        CHECK(bits <= 3.0);
        continue;
      }
      const auto a = kt::allocate(t, p, budget);
      const auto parsed = kvq::CacheSpec::parse(a.spec.to_string());
      CHECK(parsed == a.spec);
      CHECK(parsed.window == 128);
      CHECK(parsed.sinks == 4);
      REQUIRE(parsed.layers.size() == layers);
      const auto plan = kvq::plan_memory(p.shape, parsed, p.context);
      CHECK(plan.total.total_bytes() == a.bytes);
      CHECK(a.bytes <= budget);
      CHECK(a.bits_per_value <= bits + 1e-12);
      // The planner's bytes are the allocator's per-stream costs summed; the damage is the optimum
      // over every layer's (K, V) choice, enumerated.
      std::size_t counted = 0;
      for (std::size_t l = 0; l < layers; ++l) counted += cost[0][l][a.choice[0][l]] + cost[1][l][a.choice[1][l]];
      CHECK(counted == a.bytes);
      std::vector<std::vector<kt::Option>> groups;
      for (int side = 0; side < 2; ++side)
        for (std::size_t l = 0; l < layers; ++l) {
          groups.emplace_back();
          for (std::size_t c = 0; c < t.codecs[side].size(); ++c) groups.back().push_back({cost[side][l][c], t.damage[side][l][c]});
        }
      CHECK(a.predicted_damage == Approx(brute_force(groups, budget)).margin(1e-15));
      // Uniform and boundary specs are restrictions of the same search: never better.
      const auto u = kt::best_layered(t, p, budget);
      CHECK(u.bytes <= budget);
      CHECK(u.predicted_damage >= a.predicted_damage - 1e-15);
      CHECK(kvq::CacheSpec::parse(u.spec.to_string()) == u.spec);
      CHECK(kvq::plan_memory(p.shape, u.spec, p.context).total.total_bytes() == u.bytes);
    }
  }
}

TEST_CASE("calibrate: Llama-3.2-3B pricing equals kvq plan's per-layer cost", "[tools][calibrate]") {
  kvq::Rng rng(3);
  const auto t = made_up_table(4, rng);
  kt::Pricing p;
  p.context = 32768;
  p.shape = kvq::ModelShape::dense(4, 24, 8, 128, p.context);
  const auto a = kt::allocate(t, p, kt::bits_budget(p, 3.0));
  CHECK(a.bits_per_value <= 3.0);
  // A uniform spec costs the same bits/value on the 28-layer model as on its 4-layer cut.
  const auto spec = kvq::CacheSpec::parse("k=turbo3,v=turbo2,window=128,sinks=4");
  CHECK(kvq::plan_memory(p.shape, spec, p.context).total.bits_per_value() ==
        Approx(kvq::plan_memory(kvq::ModelShape::dense(28, 24, 8, 128, p.context), spec, p.context).total.bits_per_value()));
}

TEST_CASE("calibrate: sensitivity on dumps is 0 for f32 and positive for compression", "[tools][calibrate]") {
  const auto d = kvq::test::synthetic_dumps(2, 4, 2, 192, 32, 7);
  kt::EvalOptions opt;
  opt.stride = 16;
  for (const char* metric : {"out", "kl"}) {
    const auto t = kt::measure_dump_sensitivity(d, {"f32", "q8_0", "q2_1"}, {"f32", "q2_1"},
                                                kvq::CacheSpec::parse("window=32,sinks=2"), opt, metric);
    REQUIRE(t.n_layers() == 2);
    CHECK(t.window == 32);
    CHECK(t.head_dim == 32);
    for (std::size_t l = 0; l < 2; ++l) {
      CHECK(t.damage[0][l][0] == 0.0);  // measured, not assumed
      CHECK(t.damage[1][l][0] == 0.0);
      CHECK(t.damage[0][l][1] > 0.0);
      CHECK(t.damage[0][l][2] > t.damage[0][l][1]);
      if (std::string(metric) == "out") CHECK(t.damage[1][l][1] > 0.0);
      else CHECK(t.damage[1][l][1] == Approx(0.0).margin(1e-12));  // V never moves the scores
    }
    // The damage is kv_eval's loss of that layer minus the all-exact reference's.
    opt.layers = {1};
    const auto r = kt::evaluate_cache(d, kt::single_stream_spec(kvq::CacheSpec::parse("window=32,sinks=2"), 2, 1,
                                                                 kvq::StreamKind::key, "q2_1"), opt);
    const auto ref = kt::evaluate_cache(d, kvq::CacheSpec::parse("k=f32,v=f32,window=32,sinks=2"), opt);
    CHECK(t.damage[0][1][2] == Approx(kt::dump_loss(r.layers[0], metric) - kt::dump_loss(ref.layers[0], metric)));
  }
}

TEST_CASE("calibrate: the sensitivity table's text form round-trips", "[tools][calibrate]") {
  kvq::Rng rng(5);
  auto t = made_up_table(3, rng);
  t.window = 128, t.sinks = 4, t.source = "dumps /some dir with spaces";
  t.damage[1][2][1] = -1.25e-7;
  std::stringstream ss;
  kt::write_sensitivity(ss, t);
  const auto path = std::filesystem::temp_directory_path() / "kvq-calibrate-test.tsv";
  std::ofstream(path) << ss.str();
  const auto back = kt::read_sensitivity(path.string());
  CHECK(back.source == t.source);
  CHECK(back.metric == t.metric);
  CHECK(back.window == 128);
  CHECK(back.sinks == 4);
  CHECK(back.kv_heads == 2);
  CHECK(back.head_dim == 64);
  for (int side = 0; side < 2; ++side) {
    CHECK(back.codecs[side] == t.codecs[side]);
    for (std::size_t l = 0; l < 3; ++l)
      for (std::size_t c = 0; c < t.codecs[side].size(); ++c)
        CHECK(back.damage[side][l][c] == Approx(t.damage[side][l][c]).epsilon(1e-8));
  }
  // Damaged files: a foreign header, a bad side, a layer out of range, a missing codec row.
  std::string text = ss.str();
  const std::string bad[] = {"hello\n", text.substr(0, text.find('\n') + 1) + "X 0 q8_0 1\n",
                             text.substr(0, text.find('\n') + 1) + "K 9 q8_0 1\n",
                             text.substr(0, text.rfind('\n', text.size() - 2) + 1)};
  for (const auto& b : bad) {
    std::ofstream(path) << b;
    CHECK(error_code([&] { (void)kt::read_sensitivity(path.string()); }) == kvq::Errc::corrupt_data);
  }
  std::filesystem::remove(path);
  CHECK(error_code([&] { (void)kt::read_sensitivity(path.string()); }) == kvq::Errc::io_error);
}

TEST_CASE("calibrate: bad input is a clear kvq::Error", "[tools][calibrate]") {
  const auto d = kvq::test::synthetic_dumps(1, 2, 1, 64, 32, 3);
  const kvq::CacheSpec base;
  CHECK(error_code([&] { (void)kt::measure_dump_sensitivity(d, {"q9_9"}, {"f32"}, base, {}); }) ==
        kvq::Errc::invalid_argument);
  CHECK(error_code([&] { (void)kt::measure_dump_sensitivity(d, {"f32"}, {"pc4"}, base, {}); }) ==
        kvq::Errc::invalid_argument);
  CHECK(error_code([&] { (void)kt::measure_dump_sensitivity(d, {"f32"}, {"f32"}, base, {}, "mse"); }) ==
        kvq::Errc::invalid_argument);
  CHECK(error_code([] { (void)kt::load_kv_dumps("/nonexistent/kv-dumps"); }) == kvq::Errc::io_error);
  kvq::Rng rng(9);
  const auto t = made_up_table(2, rng);
  kt::Pricing p;
  p.context = 32768;
  p.shape = kvq::ModelShape::dense(2, 4, 2, 64, p.context);
  // Below the cheapest assignment (turbo2 K and V: 2.25 bits/value at head_dim 64).
  CHECK(error_code([&] { (void)kt::allocate(t, p, kt::bits_budget(p, 2.2)); }) == kvq::Errc::budget_exceeded);
  CHECK_NOTHROW(kt::allocate(t, p, kt::bits_budget(p, 2.25)));
  CHECK(error_code([&] { (void)kt::bits_budget(p, 0.0); }) == kvq::Errc::invalid_argument);
  p.shape = kvq::ModelShape::dense(3, 4, 2, 64, p.context);  // the table has 2 layers
  CHECK(error_code([&] { (void)kt::allocate(t, p, kt::bits_budget(p, 3.0)); }) == kvq::Errc::shape_mismatch);
}

TEST_CASE("calibrate: wt2-byte-a dumps, q2_1 hurts every layer more than q8_0", "[tools][calibrate][model]") {
  const auto dir = kvq::test::shared_file("data/kv-dumps/wt2-byte-a");
  if (dir.empty()) {
    WARN("skipped: ../shared/data/kv-dumps/wt2-byte-a not found (set KVQ_SHARED_DIR)");
    return;
  }
  const auto d = kt::load_kv_dumps(dir, 512);
  kt::EvalOptions opt;
  opt.stride = 64;
  const auto t = kt::measure_dump_sensitivity(d, {"f32", "q8_0", "q2_1"}, {"f32", "q8_0", "q2_1"}, kvq::CacheSpec{}, opt);
  for (int side = 0; side < 2; ++side)
    for (std::size_t l = 0; l < d.layers; ++l) {
      CHECK(t.damage[side][l][0] == 0.0);
      CHECK(t.damage[side][l][1] > 0.0);
      CHECK(t.damage[side][l][2] > 10.0 * t.damage[side][l][1]);
    }
}
