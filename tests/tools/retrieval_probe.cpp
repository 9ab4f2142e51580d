// Tests of tools/common/retrieval_probe.hpp, the engine of `kvq eval --retrieval`: the chained
// contexts hold every key once with the layer's own stream newest; beta calibration puts the
// requested exact mass on the needle (recomputed here independently in double); an exact f32
// cache reproduces relative mass 1, the exact top-1 and the exact output; a 2-bit cache without
// a window loses needle mass at old ages, a window restores exactly the ages it covers; probes
// are deterministic per seed; and on the real wt2-byte-a dumps 2-bit loses more than 4-bit.
#include "kvq_test.hpp"
#include "support/synthetic_dumps.hpp"

#include "retrieval_probe.hpp"

#include <cmath>
#include <set>
#include <tuple>

namespace {

namespace kt = kvq::tools;

kt::KvDumps probe_dumps(std::size_t L, std::size_t HQ, std::size_t HK, std::size_t T, std::size_t D) {
  return kvq::test::synthetic_dumps(L, HQ, HK, T, D, 7);
}

kt::RetrievalOptions small_options() {
  kt::RetrievalOptions o;
  o.context = 2048;
  o.ages = {16, 64, 256, 1024};
  o.masses = {0.3, 0.6, 0.9};
  o.needles = 8;
  return o;
}

// The needle's softmax weight for the probe's float query, computed from scratch in double.
double independent_mass(const kt::KvDumps& d, const kt::Probe& p, std::size_t context, double& top_other) {
  const auto ctx = kt::chain_context(d, p.layer, p.q_head / (d.q_heads / d.kv_heads), context);
  std::vector<double> s(ctx.size());
  for (std::size_t t = 0; t < ctx.size(); ++t) {
    const float* k = d.k_at(ctx[t].layer, ctx[t].head, ctx[t].token);
    long double dot = 0;
    for (std::size_t i = 0; i < d.head_dim; ++i) dot += static_cast<long double>(p.q[i]) * k[i];
    s[t] = static_cast<double>(dot) / std::sqrt(double(d.head_dim));
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double z = 0;
  top_other = -1e300;
  for (std::size_t t = 0; t < s.size(); ++t) {
    z += std::exp(s[t] - mx);
    if (t != p.needle) top_other = std::max(top_other, s[t]);
  }
  top_other -= s[p.needle];
  return std::exp(s[p.needle] - mx) / z;
}

}  // namespace

TEST_CASE("retrieval contexts: every key once, the layer's own stream newest", "[tools][retrieval]") {
  const auto d = probe_dumps(3, 4, 2, 300, 16);
  const std::size_t N = 1000;
  for (std::size_t L = 0; L < 3; ++L)
    for (std::size_t h = 0; h < 2; ++h) {
      const auto ctx = kt::chain_context(d, L, h, N);
      REQUIRE(ctx.size() == N);
      CHECK(std::tie(ctx[0].layer, ctx[0].head, ctx[0].token) == std::make_tuple(L, h, 0u));
      for (std::size_t t = 1; t < d.tokens; ++t) {  // the newest T-1 positions: (L, h) tokens 1..T-1 in order
        const auto& c = ctx[N - d.tokens + t];
        REQUIRE(std::tie(c.layer, c.head, c.token) == std::make_tuple(L, h, std::uint32_t(t)));
      }
      // Next back: the other KV head of the same layer.
      CHECK(ctx[N - d.tokens].layer == L);
      CHECK(ctx[N - d.tokens].head == 1 - h);
      std::set<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>> seen;
      for (std::size_t p = 0; p < N; ++p) {
        if (p > 0) CHECK(ctx[p].token != 0);  // one BOS only
        seen.insert({ctx[p].layer, ctx[p].head, ctx[p].token});
      }
      CHECK(seen.size() == N);
      CHECK(kt::duplicate_keys(d, ctx) == 0);
    }
  // A repeated key is found.
  auto dup = d;
  std::copy_n(dup.k_at(0, 0, 5), 16, dup.k.data() + ((0 * 2 + 1) * 300 + 7) * 16);
  CHECK(kt::duplicate_keys(dup, kt::chain_context(dup, 0, 0, N)) == 1);
  CHECK_THROWS_AS(kt::chain_context(d, 0, 0, 1 + 6 * 299 + 1), kvq::Error);  // more than the dump holds
  CHECK_NOTHROW(kt::chain_context(d, 0, 0, 1 + 6 * 299));
}

TEST_CASE("retrieval probes: beta calibration hits the requested exact mass", "[tools][retrieval]") {
  const auto d = probe_dumps(2, 4, 2, 600, 32);
  const auto opt = small_options();
  const auto pr = kt::make_probes(d, opt);
  REQUIRE(pr.probes.size() == 2 * 4 * 3 * 8);
  CHECK(pr.duplicates == 0);
  std::size_t exact_top1 = 0;
  for (const auto& p : pr.probes) {
    const std::size_t age = opt.context - 1 - p.needle;
    REQUIRE(age >= pr.bucket_lo[p.bucket]);
    REQUIRE(age < pr.bucket_hi[p.bucket]);
    double margin = 0;
    const double m = independent_mass(d, p, opt.context, margin);
    REQUIRE(m == Approx(opt.masses[p.mass_index]).margin(1e-5));
    REQUIRE(p.exact_mass == Approx(m).margin(1e-10));
    const float* qr = d.q_at(p.layer, p.q_head, d.tokens - 1);
    double qn = 0;
    for (std::size_t i = 0; i < d.head_dim; ++i) qn += double(qr[i]) * qr[i];
    REQUIRE(p.beta <= opt.max_beta * std::sqrt(qn));
    CHECK(p.exact_top1 == (margin < 0));
    if (opt.masses[p.mass_index] > 0.5) REQUIRE(p.exact_top1);  // more than half the mass: no key beats it
    exact_top1 += p.exact_top1;
  }
  CHECK(exact_top1 > pr.probes.size() * 3 / 4);
  // Larger targets need larger beta for the same needle and query.
  for (std::size_t i = 0; i + 2 * 4 * 8 < pr.probes.size(); ++i) {
    const auto& a = pr.probes[i];
    if (a.layer != 0 || a.mass_index != 0) continue;
    const auto& b = pr.probes[i + 4 * 8];  // same layer, bucket and draw index, mass 0.6
    REQUIRE(b.mass_index == 1);
    if (a.needle == b.needle && a.q_head == b.q_head) CHECK(b.beta > a.beta);
  }
  // Deterministic per seed; another seed draws other needles.
  const auto again = kt::make_probes(d, opt);
  auto other_opt = opt;
  other_opt.seed = 17;
  const auto other = kt::make_probes(d, other_opt);
  std::size_t same_needles = 0;
  for (std::size_t i = 0; i < pr.probes.size(); ++i) {
    REQUIRE(again.probes[i].needle == pr.probes[i].needle);
    REQUIRE(again.probes[i].beta == pr.probes[i].beta);
    same_needles += other.probes[i].needle == pr.probes[i].needle;
  }
  CHECK(same_needles < pr.probes.size() / 4);
  // Bad options are refused.
  auto bad = opt;
  bad.masses = {1.0};
  CHECK_THROWS_AS(kt::make_probes(d, bad), kvq::Error);
  bad = opt;
  bad.ages = {16, 4096};
  CHECK_THROWS_AS(kt::make_probes(d, bad), kvq::Error);
}

TEST_CASE("retrieval probes through caches: exact storage is exact, 2-bit loses old needles", "[tools][retrieval]") {
  const auto d = probe_dumps(2, 4, 2, 600, 32);
  const auto opt = small_options();
  const auto pr = kt::make_probes(d, opt);
  const auto all = [](const kt::Probe&) { return true; };

  const auto f32 = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=f32,v=f32"));
  for (std::size_t i = 0; i < pr.probes.size(); ++i) {
    REQUIRE(f32.outcomes[i].mass / pr.probes[i].exact_mass == Approx(1.0).margin(1e-4));
    REQUIRE(f32.outcomes[i].top1 == pr.probes[i].exact_top1);
    REQUIRE(std::sqrt(f32.outcomes[i].out_err2 / f32.outcomes[i].out_ref2) < 1e-5);
  }
  const auto s = kt::probe_stats(pr, f32, all);
  CHECK(s.n == pr.probes.size());
  CHECK(s.mean_ratio == Approx(1.0).margin(1e-4));
  CHECK(s.min_ratio == Approx(1.0).margin(1e-4));
  CHECK(s.hit_rate == s.exact_hit_rate);
  CHECK(s.out_rel < 1e-5);
  CHECK(f32.bits() == Approx(32.0));

  auto at = [&](const kt::RetrievalResult& r, std::size_t bucket, std::size_t mass) {
    return kt::probe_stats(pr, r, [&](const kt::Probe& p) { return p.bucket == bucket && p.mass_index == mass; });
  };
  const auto two = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=turbo2,v=turbo2"));
  const auto eight = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=q8_0,v=q8_0"));
  const auto windowed = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=turbo2,v=turbo2,window=128"));
  for (std::size_t b : {2, 3}) {  // ages 256.. and 1024..: compressed in all three
    CHECK(at(two, b, 1).mean_ratio < 0.9);
    CHECK(at(windowed, b, 1).mean_ratio < 0.9);
    CHECK(std::fabs(at(eight, b, 1).mean_ratio - 1.0) < 0.05);
    CHECK(at(two, b, 1).out_rel > 3 * at(eight, b, 1).out_rel);
  }
  for (std::size_t b : {0, 1}) {  // ages 16.. and 64..: inside the 128-token window
    const auto w = at(windowed, b, 1);
    CHECK(w.mean_ratio > 0.99);
    CHECK(w.hit_rate >= 0.9);  // the needle is exact, the keys it competes with are not
    CHECK(w.hit_rate >= at(two, b, 1).hit_rate);
    CHECK(at(two, b, 1).mean_ratio < w.mean_ratio);
  }
  CHECK(two.bits() < eight.bits());
}

TEST_CASE("retrieval probes with mentions: heavy hitters keep the needles that were asked about", "[tools][retrieval][heavy]") {
  const auto d = probe_dumps(2, 4, 2, 600, 32);
  auto opt = small_options();
  const auto plain = kt::make_probes(d, opt);
  opt.observe_every = 8;
  opt.mention_age = 40;
  const auto mentioned = kt::make_probes(d, opt);
  // Observation changes nothing for a cache without heavy hitters.
  const auto spec = kvq::CacheSpec::parse("k=turbo2,v=turbo2,window=64");
  const auto a = kt::run_probes(d, plain, spec), b = kt::run_probes(d, mentioned, spec);
  for (std::size_t i = 0; i < a.outcomes.size(); ++i) REQUIRE(a.outcomes[i].mass == b.outcomes[i].mass);
  // With heavy hitters, old mentioned needles are exact: their mass ratio is no
  // longer that of 2-bit keys (they may even gain: their competitors stay 2-bit).
  // The mention (age 40) comes while the needle is in the window: tokens are judged by what
  // they drew until they leave it.
  const auto heavy = kvq::CacheSpec::parse("k=turbo2,v=turbo2,window=64,heavy=64");
  const auto h_plain = kt::run_probes(d, plain, heavy), h_mentioned = kt::run_probes(d, mentioned, heavy);
  auto old = [&](const kt::RetrievalProbes& pr, const kt::RetrievalResult& r) {
    return kt::probe_stats(pr, r, [&](const kt::Probe& p) { return p.bucket >= 2; });
  };
  CHECK(old(mentioned, h_mentioned).mean_ratio > 0.97);
  CHECK(old(mentioned, h_mentioned).hit_rate >= old(mentioned, b).hit_rate);
  CHECK(old(plain, h_plain).mean_ratio < 0.95);  // never asked about: not kept
  CHECK(h_mentioned.bits() > b.bits());          // the exact copies are paid for
}

TEST_CASE("retrieval probe on the wt2-byte-a dumps: 2-bit loses needles 4-bit keeps", "[tools][retrieval][model]") {
  const auto shared = kvq::test::shared_dir();
  const auto dir = shared / "data/kv-dumps/wt2-byte-a";
  if (shared.empty() || !std::filesystem::exists(dir / "k.npy")) {
    WARN("skipped: ../shared/data/kv-dumps/wt2-byte-a not found (set KVQ_SHARED_DIR)");
    return;
  }
  const auto d = kt::load_kv_dumps(dir);
  kt::RetrievalOptions opt;
  opt.context = 9000;  // three streams and a bit: keys of layers 3 (both heads) and 4
  opt.ages = {16, 4096};
  opt.masses = {0.6};
  opt.needles = 16;
  opt.layers = {3};
  const auto pr = kt::make_probes(d, opt);
  CHECK(pr.duplicates == 0);
  const auto f32 = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=f32,v=f32"));
  const auto t4 = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=turbo4,v=turbo4"));
  const auto t2 = kt::run_probes(d, pr, kvq::CacheSpec::parse("k=turbo2,v=turbo2"));
  const auto old = [](const kt::Probe& p) { return p.bucket == 1; };
  CHECK(kt::probe_stats(pr, f32, old).mean_ratio == Approx(1.0).margin(1e-4));
  CHECK(kt::probe_stats(pr, t2, old).mean_ratio < 0.9);
  CHECK(kt::probe_stats(pr, t4, old).mean_ratio > kt::probe_stats(pr, t2, old).mean_ratio);
  CHECK(kt::probe_stats(pr, t4, old).hit_rate >= kt::probe_stats(pr, t2, old).hit_rate);
}
