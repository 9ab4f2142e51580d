// Retrieval probe on real activations: the engine of `kvq eval --retrieval`.
//
// Perplexity and whole-distribution attention errors are dominated by recent tokens, which a
// window keeps exact; what a low-bit cache loses is the ability to find one *old* token. The
// probe plants that situation with real keys: a needle (a real key of the dump) sits at a
// chosen age in a long context of real keys, and a query aimed at it,
//     q = q_real + beta * k_needle / |k_needle|,
// gets beta set so that exact attention puts a chosen mass (e.g. 0.6) on the needle. The
// same query then runs through a kvq::Cache holding the context exactly as a decoding engine
// would (every token appended in order, so the window, sinks and tiers are those of that
// length), and we measure the needle's attention mass through the cache relative to exact,
// whether the needle is still the top-scoring key, and the error of the attention output.
//
// Long contexts from real keys, without duplicates. The dump holds, per layer and KV head, one
// stream of T real tokens (token 0 = BOS). The context of (layer L, KV head h) is, oldest to
// newest: the BOS key of stream (L, h) at position 0 (the real sink of L's queries), then tokens
// 1..T-1 of other streams, then tokens 1..T-1 of (L, h) itself as the newest T-1 positions. The
// other streams are taken nearest first going back in time: the other KV heads of L, then
// layers L+1, L-1, L+2, L-2, ... (every KV head of each), the oldest one cut to fill exactly
// `context` tokens. Every key appears at most once (BOS keys of the other streams are left out,
// so position 0 is the only BOS), and the probe's real query is the query of the last token
// (T-1) of L, so the newest T-1 keys are its own, at their true relative positions. Older keys
// come from other heads and layers: real activations with realistic statistics, not the ones
// this query was trained against (which is what makes them background, not distractors).
//
// Needles. Per (layer, age bucket, mass), `needles` probes, probe j on query head j mod q_heads;
// its age is drawn uniformly in the bucket [age, min(2 age, context - 64)) by a seeded Rng. A
// needle is accepted only when no other key of the context projects more onto its direction
// (k_j . k^ < |k_needle| for all j): then the needle's exact mass rises monotonically from 0 to
// 1 with beta and the calibration has exactly one solution; and only when beta stays within
// max_beta |q_real| (default 8): a needle that barely out-projects some other key needs a huge
// beta (up to ~500 |q_real| on wt2-byte-a), i.e. logits of thousands in which any relative score
// error flips the winner -- a near-tie, not a retrieval. Refused draws are counted.
// Exact attention is computed in double from the dump's values, independently of the cache.
//
// A decoding engine attends at every step while it builds the context, and attention-aware
// precision (heavy=N) judges tokens by that attention. Two options replay it: `observe_every`
// k attends every k-th step with the real queries of that position's source stream (query head
// j of KV head h asks with query j of the stream position t was taken from), and `mention_age`
// A makes each probe's own query also attend once when its needle is A tokens old (a passage
// that names an entity early and asks about it much later: the needle drew attention once,
// while it was recent). Neither changes the exact reference (which is the final query's) or a
// cache without heavy hitters; they decide what a heavy-hitter cache has seen.
#pragma once

#include "kv_eval.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/core/error.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace kvq::tools {

struct RetrievalOptions {
  std::size_t context = 36864;                                          // tokens per context (9 x 4096)
  std::vector<std::size_t> ages{16, 64, 256, 1024, 4096, 16384, 32768};  // bucket b: [ages[b], 2 ages[b])
  std::vector<double> masses{0.3, 0.6, 0.9};                            // exact needle mass targets
  std::size_t needles = 16;  // per (layer, bucket, mass), spread over the query heads
  double max_beta = 8.0;     // refuse needles needing beta > max_beta |q_real| (near-ties in projection)
  std::uint64_t seed = 16;
  std::vector<std::size_t> layers;  // empty: all
  double scale = 0.0;               // softmax scale; 0: 1/sqrt(head_dim)
  std::size_t observe_every = 0;    // attend with the real queries every k-th step (0: never)
  std::size_t mention_age = 0;      // each probe's query also attends when its needle is this old (0: never)
};

// Where one context position comes from in the dump.
struct ContextSource {
  std::uint32_t layer, head, token;
};

// The context of (layer, kv_head), position 0 first (see the header comment).
inline std::vector<ContextSource> chain_context(const KvDumps& d, std::size_t layer, std::size_t kv_head,
                                                std::size_t n) {
  const std::size_t T = d.tokens;
  kvq::detail::require(layer < d.layers && kv_head < d.kv_heads, Errc::out_of_range, "chain_context: no such stream");
  kvq::detail::require(T >= 2, Errc::invalid_argument, "chain_context: streams need at least 2 tokens");
  // Streams newest first.
  std::vector<ContextSource> order;
  auto add_layer = [&](std::size_t l, std::size_t first_head) {
    order.push_back({std::uint32_t(l), std::uint32_t(first_head), 0});
    for (std::size_t h = 0; h < d.kv_heads; ++h)
      if (h != first_head) order.push_back({std::uint32_t(l), std::uint32_t(h), 0});
  };
  add_layer(layer, kv_head);
  for (std::size_t dist = 1; dist < d.layers; ++dist) {
    if (layer + dist < d.layers) add_layer(layer + dist, 0);
    if (dist <= layer) add_layer(layer - dist, 0);
  }
  const std::size_t available = 1 + order.size() * (T - 1);
  kvq::detail::require(n >= 2 && n <= available, Errc::out_of_range,
                       "retrieval context of " + std::to_string(n) + " tokens: the dump holds " +
                           std::to_string(available) + " distinct keys (" + std::to_string(order.size()) +
                           " streams of " + std::to_string(T - 1) + " tokens after BOS, plus one BOS)");
  std::vector<ContextSource> ctx(n);
  ctx[0] = {std::uint32_t(layer), std::uint32_t(kv_head), 0};
  std::size_t p = n;  // fill from the newest position backwards
  for (const auto& s : order) {
    for (std::size_t t = T - 1; t >= 1 && p > 1; --t) ctx[--p] = {s.layer, s.head, std::uint32_t(t)};
    if (p == 1) break;
  }
  return ctx;
}

// Number of keys of `ctx` equal (bit for bit) to an earlier one.
inline std::size_t duplicate_keys(const KvDumps& d, const std::vector<ContextSource>& ctx) {
  std::vector<const float*> k(ctx.size());
  for (std::size_t p = 0; p < ctx.size(); ++p) k[p] = d.k_at(ctx[p].layer, ctx[p].head, ctx[p].token);
  const std::size_t bytes = d.head_dim * sizeof(float);
  std::sort(k.begin(), k.end(), [&](const float* a, const float* b) { return std::memcmp(a, b, bytes) < 0; });
  std::size_t dup = 0;
  for (std::size_t i = 1; i < k.size(); ++i) dup += std::memcmp(k[i - 1], k[i], bytes) == 0;
  return dup;
}

struct Probe {
  std::size_t layer = 0, q_head = 0, bucket = 0, mass_index = 0;
  std::size_t needle = 0;  // context position; age = context - 1 - needle
  double beta = 0.0;
  double exact_mass = 0.0;  // of the float query the cache sees, in double
  bool exact_top1 = false;  // the needle has the highest exact score
  std::vector<float> q;     // [head_dim]
  std::vector<double> out;  // exact attention output [head_dim]
};

struct RetrievalProbes {
  RetrievalOptions opt;
  std::vector<std::size_t> layer_ids;
  std::vector<std::size_t> bucket_lo, bucket_hi;  // ages [lo, hi)
  std::vector<Probe> probes;
  std::size_t refused = 0;       // needle draws another key out-projected
  std::size_t refused_beta = 0;  // needle draws needing beta > max_beta |q_real|
  std::size_t duplicates = 0;  // duplicate keys over every context built (0 by construction)
  double scale = 0.0;
};

namespace detail {

// Exact scores s_j = q . k_j (double) over a context.
inline void exact_dots(const KvDumps& d, const std::vector<ContextSource>& ctx, const double* q, double* s) {
  const std::size_t D = d.head_dim;
  for (std::size_t j = 0; j < ctx.size(); ++j) {
    const float* k = d.k_at(ctx[j].layer, ctx[j].head, ctx[j].token);
    double dot = 0.0;
    for (std::size_t i = 0; i < D; ++i) dot += q[i] * double(k[i]);
    s[j] = dot;
  }
}

// Softmax weight of index `n` for logits scale * s_j.
inline double softmax_at(const double* s, std::size_t count, std::size_t n, double scale) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < count; ++j) mx = std::max(mx, scale * s[j]);
  double z = 0.0;
  for (std::size_t j = 0; j < count; ++j) z += std::exp(scale * s[j] - mx);
  return std::exp(scale * s[n] - mx) / z;
}

// beta with softmax(scale (a + beta b))[n] = target, given b[n] > b[j] for every j != n (so the
// mass rises strictly from 0 to 1): safeguarded Newton on log mass.
inline double calibrate_beta(const std::vector<double>& a, const std::vector<double>& b, std::size_t n, double scale,
                             double target) {
  const std::size_t N = a.size();
  // log mass and its derivative scale (b_n - E_p[b]).
  auto eval = [&](double beta, double& deriv) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < N; ++j) mx = std::max(mx, scale * (a[j] + beta * b[j]));
    double z = 0.0, eb = 0.0;
    for (std::size_t j = 0; j < N; ++j) {
      const double e = std::exp(scale * (a[j] + beta * b[j]) - mx);
      z += e;
      eb += e * b[j];
    }
    deriv = scale * (b[n] - eb / z);
    return scale * (a[n] + beta * b[n]) - mx - std::log(z);
  };
  const double goal = std::log(target);
  double d = 0.0, lo = 0.0, hi = 0.0;
  double f = eval(0.0, d) - goal;
  // Bracket [lo, hi] with f(lo) < 0 < f(hi).
  double step = 1.0;
  if (f < 0) {
    for (hi = step; eval(hi, d) - goal < 0; step *= 2, hi = step) lo = hi;
  } else {
    for (lo = -step; eval(lo, d) - goal > 0; step *= 2, lo = -step) hi = lo;
  }
  double beta = 0.5 * (lo + hi);
  for (int it = 0; it < 200; ++it) {
    f = eval(beta, d) - goal;
    if (std::fabs(f) < 1e-12) break;
    (f < 0 ? lo : hi) = beta;
    const double next = beta - f / d;
    beta = (d > 0 && next > lo && next < hi) ? next : 0.5 * (lo + hi);
    if (hi - lo < 1e-14 * std::max(1.0, std::fabs(beta))) break;
  }
  return beta;
}

}  // namespace detail

// The probes (spec-independent: needles, calibrated queries, exact masses and outputs).
inline RetrievalProbes make_probes(const KvDumps& d, const RetrievalOptions& opt) {
  const std::size_t N = opt.context, D = d.head_dim, HQ = d.q_heads, group = d.q_heads / d.kv_heads;
  RetrievalProbes r;
  r.opt = opt;
  r.scale = opt.scale > 0 ? opt.scale : 1.0 / std::sqrt(double(D));
  r.layer_ids = opt.layers;
  if (r.layer_ids.empty())
    for (std::size_t l = 0; l < d.layers; ++l) r.layer_ids.push_back(l);
  for (std::size_t l : r.layer_ids)
    kvq::detail::require(l < d.layers, Errc::out_of_range, "retrieval: layer " + std::to_string(l) + " not in the dump");
  kvq::detail::require(opt.needles > 0, Errc::invalid_argument, "retrieval: needles must be positive");
  for (double m : opt.masses)
    kvq::detail::require(m > 0.0 && m < 1.0, Errc::invalid_argument, "retrieval: masses must lie in (0, 1)");
  for (std::size_t b = 0; b < opt.ages.size(); ++b) {
    const std::size_t lo = opt.ages[b], hi = std::min(2 * lo, N > 64 ? N - 64 : 0);
    kvq::detail::require(lo >= 1 && lo < hi && (b == 0 || lo > opt.ages[b - 1]), Errc::invalid_argument,
                         "retrieval: age " + std::to_string(lo) + " does not fit a context of " + std::to_string(N) +
                             " tokens (ages ascending, each below context - 64)");
    r.bucket_lo.push_back(lo);
    r.bucket_hi.push_back(hi);
  }
  std::vector<double> a(N), b(N), s(N), qd(D), khat(D);
  for (std::size_t L : r.layer_ids) {
    std::vector<std::vector<ContextSource>> ctx(d.kv_heads);
    for (std::size_t h = 0; h < d.kv_heads; ++h) {
      ctx[h] = chain_context(d, L, h, N);
      r.duplicates += duplicate_keys(d, ctx[h]);
    }
    for (std::size_t mi = 0; mi < opt.masses.size(); ++mi)
      for (std::size_t bk = 0; bk < opt.ages.size(); ++bk) {
        // One stream of draws per cell: a cell's probes do not depend on which others are run.
        kvq::Rng rng(opt.seed * 0x9E3779B97F4A7C15ull + (L * 131 + mi) * 8191 + bk);
        for (std::size_t j = 0; j < opt.needles; ++j) {
          Probe p;
          p.layer = L, p.q_head = j % HQ, p.bucket = bk, p.mass_index = mi;
          const auto& c = ctx[p.q_head / group];
          const float* qr = d.q_at(L, p.q_head, d.tokens - 1);
          for (std::size_t i = 0; i < D; ++i) qd[i] = qr[i];
          detail::exact_dots(d, c, qd.data(), a.data());
          double q_norm = 0.0;
          for (std::size_t i = 0; i < D; ++i) q_norm += qd[i] * qd[i];
          q_norm = std::sqrt(q_norm);
          for (int attempt = 0;; ++attempt) {
            kvq::detail::require(attempt < 1000, Errc::invalid_argument,
                                 "retrieval: no needle in age bucket " + std::to_string(r.bucket_lo[bk]) +
                                     " of layer " + std::to_string(L) +
                                     " dominates its own direction with beta <= max_beta |q_real|");
            const std::size_t span = r.bucket_hi[bk] - r.bucket_lo[bk];
            const std::size_t age = r.bucket_lo[bk] + std::size_t(rng.uniform() * double(span));
            p.needle = N - 1 - age;
            const float* kn = d.k_at(c[p.needle].layer, c[p.needle].head, c[p.needle].token);
            double norm = 0.0;
            for (std::size_t i = 0; i < D; ++i) norm += double(kn[i]) * double(kn[i]);
            norm = std::sqrt(norm);
            for (std::size_t i = 0; i < D; ++i) khat[i] = double(kn[i]) / norm;
            detail::exact_dots(d, c, khat.data(), b.data());
            bool dominant = norm > 0;
            for (std::size_t t = 0; t < N && dominant; ++t) dominant = t == p.needle || b[t] < b[p.needle];
            if (!dominant) {
              ++r.refused;
              continue;
            }
            p.beta = detail::calibrate_beta(a, b, p.needle, r.scale, opt.masses[mi]);
            if (p.beta <= opt.max_beta * q_norm) break;
            ++r.refused_beta;
          }
          // What the cache sees is the float query; the exact reference uses the same one.
          p.q.resize(D);
          for (std::size_t i = 0; i < D; ++i) {
            p.q[i] = static_cast<float>(qd[i] + p.beta * khat[i]);
            khat[i] = p.q[i];  // reused as the double copy of the float query
          }
          detail::exact_dots(d, c, khat.data(), s.data());
          p.exact_mass = detail::softmax_at(s.data(), N, p.needle, r.scale);
          p.exact_top1 = std::max_element(s.begin(), s.end()) - s.begin() == std::ptrdiff_t(p.needle);
          double mx = -std::numeric_limits<double>::infinity(), z = 0.0;
          for (std::size_t t = 0; t < N; ++t) mx = std::max(mx, r.scale * s[t]);
          p.out.assign(D, 0.0);
          for (std::size_t t = 0; t < N; ++t) {
            const double w = std::exp(r.scale * s[t] - mx);
            z += w;
            const float* v = d.v_at(c[t].layer, c[t].head, c[t].token);
            for (std::size_t i = 0; i < D; ++i) p.out[i] += w * double(v[i]);
          }
          for (double& o : p.out) o /= z;
          r.probes.push_back(std::move(p));
        }
      }
  }
  return r;
}

// What one probe measured through a cache.
struct ProbeOutcome {
  double mass = 0.0;               // needle's attention mass through the cache
  bool top1 = false;               // the needle has the highest score through the cache
  double out_err2 = 0.0, out_ref2 = 0.0;  // |o_cache - o_exact|^2, |o_exact|^2
};

struct RetrievalResult {
  CacheSpec spec;
  std::vector<ProbeOutcome> outcomes;  // one per probe, same order
  std::size_t bytes = 0, values = 0;   // what the caches held at `context` tokens (K and V)
  double bits() const { return values ? 8.0 * double(bytes) / double(values) : 0.0; }
};

// Runs every probe through a kvq::Cache of `spec`: per layer, the contexts of all KV heads are
// appended token by token, then the probes' queries attend (Cache::scores for the mass and the
// top-1, Cache::attend for the output; one attend per set of probes on distinct query heads).
inline RetrievalResult run_probes(const KvDumps& d, const RetrievalProbes& pr, const CacheSpec& spec) {
  const std::size_t N = pr.opt.context, D = d.head_dim, HQ = d.q_heads, HK = d.kv_heads;
  RetrievalResult res;
  res.spec = spec;
  res.outcomes.resize(pr.probes.size());
  std::vector<float> kbuf(N * HK * D), vbuf(N * HK * D), q(HQ * D), out(HQ * D), sc(N);
  for (std::size_t L : pr.layer_ids) {
    kvq::Cache cache(kvq::ModelShape::dense(d.layers, HQ, HK, D, N), spec);  // one layer's contexts at a time
    for (std::size_t h = 0; h < HK; ++h) {
      const auto ctx = chain_context(d, L, h, N);
      for (std::size_t t = 0; t < N; ++t) {
        std::copy_n(d.k_at(ctx[t].layer, ctx[t].head, ctx[t].token), D, kbuf.data() + (t * HK + h) * D);
        std::copy_n(d.v_at(ctx[t].layer, ctx[t].head, ctx[t].token), D, vbuf.data() + (t * HK + h) * D);
      }
    }
    // The steps at which probes mention their needles (observation, see the header comment).
    std::vector<std::vector<std::size_t>> mentions(N);
    if (pr.opt.mention_age)
      for (std::size_t i = 0; i < pr.probes.size(); ++i) {
        const Probe& p = pr.probes[i];
        if (p.layer == L && N - 1 - p.needle > pr.opt.mention_age) mentions[p.needle + pr.opt.mention_age].push_back(i);
      }
    const std::size_t group = HQ / HK;
    std::vector<std::vector<ContextSource>> ctxs(HK);
    if (pr.opt.observe_every || pr.opt.mention_age)
      for (std::size_t h = 0; h < HK; ++h) ctxs[h] = chain_context(d, L, h, N);
    const auto natural = [&](std::size_t t) {  // the real queries of step t's sources
      for (std::size_t qh = 0; qh < HQ; ++qh) {
        const ContextSource& src = ctxs[qh / group][t];
        std::copy_n(d.q_at(src.layer, src.head * group + qh % group, src.token), D, q.data() + qh * D);
      }
    };
    for (std::size_t t = 0; t < N; ++t) {
      cache.append(L, kbuf.data() + t * HK * D, vbuf.data() + t * HK * D);
      if (pr.opt.observe_every && (t + 1) % pr.opt.observe_every == 0) {
        natural(t);
        cache.attend(L, q.data(), out.data(), static_cast<float>(pr.scale));
      }
      // Probes on distinct query heads share an attend.
      std::vector<std::size_t>& due = mentions[t];
      while (!due.empty()) {
        natural(t);
        std::vector<bool> taken(HQ, false);
        for (std::size_t j = 0; j < due.size();) {
          const Probe& p = pr.probes[due[j]];
          if (taken[p.q_head]) {
            ++j;
            continue;
          }
          taken[p.q_head] = true;
          std::copy_n(p.q.data(), D, q.data() + p.q_head * D);
          due.erase(due.begin() + std::ptrdiff_t(j));
        }
        cache.attend(L, q.data(), out.data(), static_cast<float>(pr.scale));
      }
    }
    res.bytes += cache.bytes_used(L);
    res.values += 2 * N * HK * D;
    // This layer's probes, queued per query head.
    std::vector<std::vector<std::size_t>> queue(HQ);
    for (std::size_t i = 0; i < pr.probes.size(); ++i)
      if (pr.probes[i].layer == L) queue[pr.probes[i].q_head].push_back(i);
    std::size_t rounds = 0;
    for (const auto& qh : queue) rounds = std::max(rounds, qh.size());
    for (std::size_t r = 0; r < rounds; ++r) {
      std::fill(q.begin(), q.end(), 0.0f);
      for (std::size_t h = 0; h < HQ; ++h)
        if (r < queue[h].size()) std::copy_n(pr.probes[queue[h][r]].q.data(), D, q.data() + h * D);
      cache.attend(L, q.data(), out.data(), static_cast<float>(pr.scale));
      for (std::size_t h = 0; h < HQ; ++h) {
        if (r >= queue[h].size()) continue;
        const Probe& p = pr.probes[queue[h][r]];
        ProbeOutcome& o = res.outcomes[queue[h][r]];
        cache.scores(L, h, p.q.data(), sc.data());
        double mx = -std::numeric_limits<double>::infinity(), z = 0.0;
        std::size_t best = 0;
        for (std::size_t t = 0; t < N; ++t) {
          mx = std::max(mx, pr.scale * double(sc[t]));
          if (sc[t] > sc[best]) best = t;
        }
        for (std::size_t t = 0; t < N; ++t) z += std::exp(pr.scale * double(sc[t]) - mx);
        o.mass = std::exp(pr.scale * double(sc[p.needle]) - mx) / z;
        o.top1 = best == p.needle;
        for (std::size_t i = 0; i < D; ++i) {
          const double e = double(out[h * D + i]) - p.out[i];
          o.out_err2 += e * e;
          o.out_ref2 += p.out[i] * p.out[i];
        }
      }
    }
  }
  return res;
}

// Summary of the outcomes of the probes selected by `keep(probe)`.
struct ProbeStats {
  std::size_t n = 0;
  double mean_ratio = 0.0, p10_ratio = 0.0, min_ratio = 0.0;  // cache mass / exact mass
  double hit_rate = 0.0, exact_hit_rate = 0.0;                  // needle is top-1 (cache, exact)
  double out_rel = 0.0;                                         // sqrt(sum err^2 / sum ref^2)
};

template <class Keep>
ProbeStats probe_stats(const RetrievalProbes& pr, const RetrievalResult& res, Keep&& keep) {
  ProbeStats st;
  std::vector<double> ratios;
  double hits = 0, exact_hits = 0, e2 = 0, r2 = 0;
  for (std::size_t i = 0; i < pr.probes.size(); ++i) {
    if (!keep(pr.probes[i])) continue;
    const auto& o = res.outcomes[i];
    ratios.push_back(o.mass / pr.probes[i].exact_mass);
    hits += o.top1;
    exact_hits += pr.probes[i].exact_top1;
    e2 += o.out_err2;
    r2 += o.out_ref2;
  }
  st.n = ratios.size();
  if (st.n == 0) return st;
  double sum = 0.0;
  for (double x : ratios) sum += x;
  std::sort(ratios.begin(), ratios.end());
  st.mean_ratio = sum / double(st.n);
  st.p10_ratio = ratios[(st.n - 1) / 10];
  st.min_ratio = ratios.front();
  st.hit_rate = hits / double(st.n);
  st.exact_hit_rate = exact_hits / double(st.n);
  st.out_rel = r2 > 0 ? std::sqrt(e2 / r2) : 0.0;
  return st;
}

}  // namespace kvq::tools
