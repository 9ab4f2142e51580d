#include "support/cache_fixtures.hpp"
#include "support/segments.hpp"
#include "support/tile_codec.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/codec/uniform.hpp>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>

using kvq::Cache;
using kvq::CacheSpec;
using kvq::Errc;
using kvq::ModelShape;
using kvq::StreamKind;
using kvq::ValueProducts;
using namespace kvq::test;

namespace {

constexpr std::size_t kLayers = 2, kTokens = 768, kQueries = 48;

struct ErrorStats {
  double mean = 0, max = 0;
};

// Exact double attention for the last kQueries positions of every layer and
// query head, [layer][position][q_head]: the same for every configuration, so
// it is computed once per process.
const std::vector<Eigen::VectorXd>& reference_outputs(const RealDump& d) {
  static std::vector<Eigen::VectorXd> refs;
  if (!refs.empty()) return refs;
  const std::size_t g = d.q_heads / d.kv_heads;
  for (std::size_t l = 0; l < d.layers; ++l)
    for (std::size_t i = 0; i < kQueries; ++i) {
      const std::size_t pos = d.tokens - kQueries + i;
      for (std::size_t qh = 0; qh < d.q_heads; ++qh)
        refs.push_back(reference_attention(d.q_at(l, pos) + qh * d.dim, d.k_at(l, 0), d.v_at(l, 0), pos, d.kv_heads,
                                           d.dim, qh / g, 1.0 / std::sqrt(double(d.dim))));
    }
  return refs;
}

// Relative L2 error of the cache's prefill attention over the last kQueries
// positions, every query head, against exact double attention.
ErrorStats attention_error(const RealDump& d, const std::vector<Eigen::VectorXd>& refs, const std::string& spec_text) {
  Cache cache(d.shape(), CacheSpec::parse(spec_text));
  for (std::size_t l = 0; l < d.layers; ++l) cache.append(l, d.tokens, d.k_at(l, 0), d.v_at(l, 0));
  ErrorStats st;
  std::size_t n = 0;
  std::vector<float> out(kQueries * d.q_heads * d.dim);
  for (std::size_t l = 0; l < d.layers; ++l) {
    cache.attend(l, kQueries, d.q_at(l, d.tokens - kQueries), out.data());
    for (std::size_t i = 0; i < kQueries; ++i)
      for (std::size_t qh = 0; qh < d.q_heads; ++qh) {
        const auto& ref = refs[(l * kQueries + i) * d.q_heads + qh];
        double num = 0;
        for (std::size_t j = 0; j < d.dim; ++j) {
          const double e = out[(i * d.q_heads + qh) * d.dim + j] - ref(j);
          num += e * e;
        }
        const double rel = std::sqrt(num) / ref.norm();
        st.mean += rel;
        st.max = std::max(st.max, rel);
        ++n;
      }
  }
  st.mean /= double(n);
  return st;
}

}  // namespace

TEST_CASE("cache: a window covering every token is exact attention (real dumps)", "[cache][real]") {
  const auto d = load_real_dump(kLayers, kTokens);
  if (!d) {
    WARN("../shared K/V dumps absent: skipped");
    return;
  }
  const auto& refs = reference_outputs(*d);
  for (const char* spec : {"k=q2_1,v=q2_1,window=768", "k=q2_1,v=q2_1,window=700,sinks=68",
                           "k=q2_1,v=q2_1,window=768,precision=f16"}) {
    INFO(spec);
    const auto e = attention_error(*d, refs, spec);
    if (std::getenv("KVQ_PRINT_ERRORS")) std::printf("| `%s` | %.3g | %.3g |\n", spec, e.mean, e.max);
    CHECK(e.max < 1e-5);  // float accumulation over 768 tokens against double (measured 4.3e-6)
  }
}

TEST_CASE("cache: every codec x age schedule stays within its measured error bound (real dumps)",
          "[cache][real]") {
  const auto d = load_real_dump(kLayers, kTokens);
  if (!d) {
    WARN("../shared K/V dumps absent: skipped");
    return;
  }
  // Bounds: measured on layers 0-1, 768 tokens, the last 48 query positions x
  // 8 query heads, then set ~1.5x above the measurement (docs/CACHE.md).
  struct Row {
    const char* spec;
    double mean_bound, max_bound;
  };
  const Row rows[] = {
      {"k=q8_0,v=q8_0", 0.018, 0.054},
      {"k=q4_1,v=q4_1", 0.25, 0.55},
      {"k=q4_0,v=q4_0", 0.29, 0.71},
      {"k=q3_1,v=q3_1", 0.53, 1.26},
      {"k=q2_1,v=q2_1", 1.35, 3.26},
      {"k=q8_0,v=q2_1", 1.18, 3.26},
      {"k=q4_1,v=q4_1,window=128", 0.18, 0.48},
      {"k=q2_1,v=q2_1,window=128", 1.05, 3.41},
      {"k=q2_1,v=q2_1,window=128,sinks=4", 1.05, 3.41},
      {"k=q4_1,v=q4_1,window=128,sinks=4,tier=384:q2_1/q2_1", 0.64, 1.71},
      {"k=q4_1,v=q4_1,window=128,precision=f16", 0.18, 0.48},
      {"k=q8_0,v=q2_1,boundary=1+0:q8_0/q8_0", 0.38, 1.2},
  };
  const bool print = std::getenv("KVQ_PRINT_ERRORS") != nullptr;
  std::map<std::string, double> mean;
  const auto& refs = reference_outputs(*d);
  for (const auto& r : rows) {
    const auto e = attention_error(*d, refs, r.spec);
    mean[r.spec] = e.mean;
    if (print) std::printf("| `%s` | %.5f | %.5f |\n", r.spec, e.mean, e.max);
    INFO(r.spec << ": mean " << e.mean << " max " << e.max);
    CHECK(e.mean <= r.mean_bound);
    CHECK(e.max <= r.max_bound);
  }
  // Orderings a wiring bug would break: more bits, a window, a boundary layer all help.
  CHECK(mean["k=q8_0,v=q8_0"] < mean["k=q4_1,v=q4_1"]);
  CHECK(mean["k=q4_1,v=q4_1"] < mean["k=q3_1,v=q3_1"]);
  CHECK(mean["k=q3_1,v=q3_1"] < mean["k=q2_1,v=q2_1"]);
  CHECK(mean["k=q4_1,v=q4_1,window=128"] < mean["k=q4_1,v=q4_1"]);
  CHECK(mean["k=q2_1,v=q2_1,window=128"] < mean["k=q2_1,v=q2_1"]);
  CHECK(mean["k=q4_1,v=q4_1,window=128,sinks=4,tier=384:q2_1/q2_1"] < mean["k=q2_1,v=q2_1,window=128,sinks=4"]);
  CHECK(mean["k=q4_1,v=q4_1,window=128,sinks=4,tier=384:q2_1/q2_1"] > mean["k=q4_1,v=q4_1,window=128"]);
  CHECK(mean["k=q8_0,v=q2_1,boundary=1+0:q8_0/q8_0"] < mean["k=q8_0,v=q2_1"]);
}

TEST_CASE("cache: an engine's decode loop (append, then attend, per token) on real dumps", "[cache][real]") {
  const auto d = load_real_dump(1, 320);
  if (!d) {
    WARN("../shared K/V dumps absent: skipped");
    return;
  }
  // q8_0 with a 64-token window and 4 sinks: every step checks the newest
  // position against exact attention; the error stays within the q8_0 bound
  // and is zero while the window still holds every token.
  Cache cache(d->shape(), CacheSpec::parse("k=q8_0,v=q8_0,window=64,sinks=4"));
  std::vector<float> out(d->q_heads * d->dim);
  const std::size_t g = d->q_heads / d->kv_heads;
  double worst = 0, worst_exact = 0;
  for (std::size_t t = 0; t < d->tokens; ++t) {
    cache.append(0, d->k_at(0, t), d->v_at(0, t));
    cache.attend(0, d->q_at(0, t), out.data());
    for (std::size_t qh = 0; qh < d->q_heads; qh += 3) {
      const auto ref = reference_attention(d->q_at(0, t) + qh * d->dim, d->k_at(0, 0), d->v_at(0, 0), t, d->kv_heads,
                                           d->dim, qh / g, 1.0 / std::sqrt(double(d->dim)));
      double num = 0;
      for (std::size_t j = 0; j < d->dim; ++j) num += std::pow(out[qh * d->dim + j] - ref(j), 2);
      const double rel = std::sqrt(num) / ref.norm();
      (t < 68 ? worst_exact : worst) = std::max(t < 68 ? worst_exact : worst, rel);
    }
  }
  CHECK(worst_exact < 1e-5);
  CHECK(worst < 0.054);
  CHECK(worst > 1e-4);  // compression did happen
}

// ---------------------------------------------------------------------------
// Synthetic data: fast, and exercises tile codecs the registry lacks.

namespace {

using Tile4 = ChannelTile<4>;
using Tile8 = ChannelTile<8>;


kvq::AnyCodec test_factory(std::string_view name, std::size_t hd) {
  if (name == Tile4::name) return kvq::AnyCodec(Tile4(hd));
  if (name == Tile8::name) return kvq::AnyCodec(Tile8(hd));
  return kvq::default_codec_factory(name, hd);
}

const ModelShape kHybridShape = ModelShape::hybrid(6, 3, 4, 2, 32, 400);  // KV layers 2 and 5, GQA 2

Cache make(const std::string& spec) { return Cache(kHybridShape, CacheSpec::parse(spec), test_factory); }

void fill(Cache& c, kvq::Rng& rng, std::size_t n, bool batch) {
  for (std::size_t layer : kHybridShape.kv_layers) {
    const auto k = random_tokens(rng, n, kHybridShape.n_kv_heads, kHybridShape.head_dim);
    const auto v = random_tokens(rng, n, kHybridShape.n_kv_heads, kHybridShape.head_dim);
    if (batch) {
      c.append(layer, n, k.data(), v.data());
    } else {
      const std::size_t row = kHybridShape.n_kv_heads * kHybridShape.head_dim;
      for (std::size_t t = 0; t < n; ++t) c.append(layer, k.data() + t * row, v.data() + t * row);
    }
  }
}

// Every token of a stream decoded, [length][head_dim], from the segment views.
std::vector<float> decode_stream(const Cache& c, std::size_t layer, StreamKind kind, std::size_t head) {
  std::vector<float> x(c.length(layer) * kHybridShape.head_dim);
  std::size_t next = 0;
  for (const auto& s : kvq::test::segments_of(c, layer, kind, head)) {
    CHECK(s.first_position == next);
    const std::size_t g = s.codec->tokens_per_tile();
    for (std::size_t t = 0; t < s.n_tokens / g; ++t)
      s.codec->decode_tile(s.bytes.data() + t * s.codec->bytes_per_tile(), x.data() + (s.first_position + t * g) * kHybridShape.head_dim);
    next += s.n_tokens;
  }
  CHECK(next == c.length(layer));
  return x;
}

const char* kSpecs[] = {
    "k=q4_1,v=q8_0",
    "k=test_ch4,v=q4_1,window=5,sinks=3",
    "k=test_ch4,v=q4_1,window=6,sinks=2,tier=20:test_ch8/q2_1,tier=50:q2_1/q2_1,rollback=7",
    "k=q8_0,v=test_ch8,window=0,tier=16:q2_1/test_ch4,precision=f16,rollback=3",
};

}  // namespace

TEST_CASE("cache: attention equals exact attention over the decoded cache", "[cache]") {
  kvq::Rng rng(1);
  for (const char* spec : kSpecs) {
    INFO(spec);
    Cache c = make(spec);
    c.set_int8_scores(false);  // f32 scores, as the f32 reference (int8 scores: tests/cache/fused_attention.cpp)
    fill(c, rng, 137, false);
    const std::size_t layer = 5, d = kHybridShape.head_dim, g = kHybridShape.group_size(), n_pos = 9;
    const auto q = random_tokens(rng, n_pos, kHybridShape.n_q_heads, d);
    std::vector<float> out(q.size());
    c.attend(layer, n_pos, q.data(), out.data());
    std::vector<std::vector<float>> k(kHybridShape.n_kv_heads), v(kHybridShape.n_kv_heads);
    for (std::size_t h = 0; h < kHybridShape.n_kv_heads; ++h) {
      k[h] = decode_stream(c, layer, StreamKind::key, h);
      v[h] = decode_stream(c, layer, StreamKind::value, h);
    }
    const std::size_t L = c.length(layer);
    for (std::size_t i = 0; i < n_pos; ++i)
      for (std::size_t qh = 0; qh < kHybridShape.n_q_heads; ++qh) {
        const auto ref = reference_attention(q.data() + (i * kHybridShape.n_q_heads + qh) * d, k[qh / g].data(),
                                             v[qh / g].data(), L - n_pos + i, 1, d, 0, 1.0 / std::sqrt(double(d)));
        for (std::size_t j = 0; j < d; ++j)
          CHECK(std::abs(out[(i * kHybridShape.n_q_heads + qh) * d + j] - ref(j)) < 1e-5 * (1 + std::abs(ref(j))));
      }
    // A custom scale is honoured.
    std::vector<float> o2(kHybridShape.n_q_heads * d);
    c.attend(layer, q.data(), o2.data(), 0.5f);
    const auto ref = reference_attention(q.data(), k[0].data(), v[0].data(), L - 1, 1, d, 0, 0.5);
    for (std::size_t j = 0; j < d; ++j) CHECK(std::abs(o2[j] - ref(j)) < 1e-5 * (1 + std::abs(ref(j))));
  }
}

TEST_CASE("cache: decode attend, prefill attend and scores/accumulate agree", "[cache]") {
  kvq::Rng rng(2);
  for (const char* spec : kSpecs) {
    INFO(spec);
    Cache c = make(spec);
    c.set_int8_scores(false);  // scores() is f32: compare like with like
    fill(c, rng, 61, true);
    const std::size_t d = kHybridShape.head_dim, nq = kHybridShape.n_q_heads, layer = 2;
    const auto q = random_tokens(rng, 4, nq, d);
    std::vector<float> pre(q.size()), dec(nq * d);
    c.attend(layer, 4, q.data(), pre.data());
    c.attend(layer, q.data() + 3 * nq * d, dec.data());
    // The same arithmetic up to the kernels' register tiling, which depends on
    // how many queries share a pass (8-query tiles on AVX-512): equal within
    // float rounding, not bit for bit.
    for (std::size_t j = 0; j < nq * d; ++j) CHECK(std::abs(dec[j] - pre[3 * nq * d + j]) < 1e-6f * (1 + std::abs(dec[j])));
    // The engine-side path: raw scores, own softmax, accumulate.
    const std::size_t L = c.length(layer);
    for (std::size_t qh = 0; qh < nq; ++qh) {
      std::vector<float> s(L), o(d);
      c.scores(layer, qh, q.data() + (3 * nq + qh) * d, s.data());
      double m = -1e30, sum = 0;
      for (float x : s) m = std::max(m, double(x) / std::sqrt(double(d)));
      for (float& x : s) sum += (x = float(std::exp(double(x) / std::sqrt(double(d)) - m)));
      for (float& x : s) x = float(x / sum);
      c.accumulate(layer, qh, s.data(), o.data());
      for (std::size_t j = 0; j < d; ++j) CHECK(std::abs(o[j] - dec[qh * d + j]) < 1e-5);
    }
  }
}

TEST_CASE("cache: batch append equals token-by-token append", "[cache]") {
  for (const char* spec : kSpecs) {
    INFO(spec);
    kvq::Rng r1(3), r2(3);
    Cache a = make(spec), b = make(spec);
    fill(a, r1, 90, true);
    fill(b, r2, 90, false);
    CHECK(snap(a) == snap(b));
  }
}

TEST_CASE("cache: demotion keeps every token exactly once, bytes as a direct encode gives", "[cache]") {
  // K: tile codec (G=4) then test_ch8 (G=8) then q2_1; V: q4_1 then q2_1 twice.
  const std::string spec = "k=test_ch4,v=q4_1,window=6,sinks=2,tier=20:test_ch8/q2_1,tier=50:q2_1/q2_1";
  Cache c = make(spec);
  kvq::Rng rng(4);
  const std::size_t n = 150, d = kHybridShape.head_dim, row = kHybridShape.n_kv_heads * d;
  const auto k = random_tokens(rng, n, kHybridShape.n_kv_heads, d), v = random_tokens(rng, n, kHybridShape.n_kv_heads, d);
  const std::size_t layer = 2;
  for (std::size_t t = 0; t < n; ++t) {
    c.append(layer, k.data() + t * row, v.data() + t * row);
    for (StreamKind kind : {StreamKind::key, StreamKind::value}) {
      const auto segs = kvq::test::segments_of(c, layer, kind, 1);
      std::size_t total = 0;
      for (const auto& s : segs) total += s.n_tokens;
      REQUIRE(total == t + 1);
      CHECK(segs.front().n_tokens == std::min<std::size_t>(t + 1, 2));  // sinks
      const std::size_t window = segs.back().n_tokens, G = segs[segs.size() - 2].codec->tokens_per_tile();
      if (t + 1 >= 2 + 6) CHECK((window >= 6 && window <= 6 + G - 1));  // effective window W..W+G-1
    }
  }
  // Each segment holds exactly the encode chain of the original tokens.
  for (StreamKind kind : {StreamKind::key, StreamKind::value}) {
    const float* src = kind == StreamKind::key ? k.data() : v.data();
    for (std::size_t h = 0; h < kHybridShape.n_kv_heads; ++h) {
      const auto segs = kvq::test::segments_of(c, layer, kind, h);
      REQUIRE(segs.size() == 5);
      for (std::size_t j = 0; j < segs.size(); ++j) {
        const auto& s = segs[j];
        // The chain from the policy tier (segment 3) down to segment j.
        std::vector<const kvq::AnyCodec*> chain;
        for (std::size_t m = (j == 0 || j == 4) ? j : 3; m + 1 > j; --m) chain.push_back(segs[m].codec);
        std::vector<float> x(s.n_tokens * d);
        for (std::size_t t = 0; t < s.n_tokens; ++t)
          std::copy_n(src + (s.first_position + t) * row + h * d, d, x.begin() + t * d);
        std::vector<std::byte> bytes;
        for (std::size_t ci = 0; ci < chain.size(); ++ci) {
          const auto* codec = chain[ci];
          const std::size_t g = codec->tokens_per_tile(), bt = codec->bytes_per_tile();
          REQUIRE(s.n_tokens % g == 0);
          bytes.assign(s.n_tokens / g * bt, std::byte{0});
          for (std::size_t t = 0; t < s.n_tokens / g; ++t) codec->encode_tile(x.data() + t * g * d, bytes.data() + t * bt);
          if (ci + 1 < chain.size())
            for (std::size_t t = 0; t < s.n_tokens / g; ++t) codec->decode_tile(bytes.data() + t * bt, x.data() + t * g * d);
        }
        INFO("stream " << int(kind) << " head " << h << " segment " << j);
        CHECK(std::equal(bytes.begin(), bytes.end(), s.bytes.begin(), s.bytes.end()));
      }
      // Tier sizes at length 150: ages >= 50 (positions <= 99) in segment 1, units of lcm(8,1)=8 / lcm(1,1)=1.
      CHECK(segs[1].n_tokens > 0);
      CHECK(segs[2].n_tokens > 0);
      CHECK(segs[2].first_position + segs[2].n_tokens <= 150 - 20);  // newest demoted token has >= 20 newer ones
      CHECK(segs[1].first_position + segs[1].n_tokens <= 150 - 50);
    }
  }
}

TEST_CASE("cache: rollback then re-append equals never having appended", "[cache]") {
  const std::string spec = "k=test_ch4,v=q4_1,window=6,sinks=2,tier=20:test_ch8/q2_1,tier=50:q2_1/q2_1,rollback=7";
  const std::size_t d = kHybridShape.head_dim, row = kHybridShape.n_kv_heads * d;
  kvq::Rng rng(5);
  const auto k = random_tokens(rng, 200, kHybridShape.n_kv_heads, d), v = random_tokens(rng, 200, kHybridShape.n_kv_heads, d);
  auto feed = [&](Cache& c, std::size_t from, std::size_t to, const float* kk, const float* vv) {
    for (std::size_t layer : kHybridShape.kv_layers)
      for (std::size_t t = from; t < to; ++t) c.append(layer, kk + t * row, vv + t * row);
  };
  const auto junk_k = random_tokens(rng, 200, kHybridShape.n_kv_heads, d), junk_v = random_tokens(rng, 200, kHybridShape.n_kv_heads, d);
  for (std::size_t n : {3, 30, 57, 120}) {
    for (std::size_t drafts : {1, 4, 7}) {
      for (std::size_t more : {0, 2, 9}) {
        INFO("n " << n << " drafts " << drafts << " re-append " << more);
        Cache a = make(spec), b = make(spec);
        feed(a, 0, n + more, k.data(), v.data());
        feed(b, 0, n, k.data(), v.data());
        feed(b, n, n + drafts, junk_k.data(), junk_v.data());  // rejected speculative tokens
        CHECK(b.exact_rollback_floor(2) <= n);
        b.truncate(n);
        CHECK(b.length(2) == n);
        feed(b, n, n + more, k.data(), v.data());
        if (more >= drafts) {
          CHECK(snap(a) == snap(b));  // everything, including the undo log
        }
        for (std::size_t layer : kHybridShape.kv_layers)
          for (StreamKind kind : {StreamKind::key, StreamKind::value})
            for (std::size_t h = 0; h < kHybridShape.n_kv_heads; ++h) {
              const auto sa = kvq::test::segments_of(a, layer, kind, h), sb = kvq::test::segments_of(b, layer, kind, h);
              REQUIRE(sa.size() == sb.size());
              for (std::size_t j = 0; j < sa.size(); ++j) {
                CHECK(sa[j].n_tokens == sb[j].n_tokens);
                CHECK(std::equal(sa[j].bytes.begin(), sa[j].bytes.end(), sb[j].bytes.begin(), sb[j].bytes.end()));
              }
            }
      }
    }
  }
}

TEST_CASE("cache: rollback deeper than the reserve keeps a valid, close cache", "[cache]") {
  const std::size_t d = kHybridShape.head_dim;
  for (const char* spec : kSpecs) {
    INFO(spec);
    Cache c = make(spec);
    kvq::Rng rng(6);
    fill(c, rng, 120, false);
    const std::size_t floor = c.exact_rollback_floor(2);
    CHECK(floor <= 120 - c.spec().rollback_reserve);
    c.truncate(floor > 40 ? 40 : floor / 2);
    const std::size_t L = c.length(2);
    CHECK(c.exact_rollback_floor(2) == L);
    std::size_t total = 0;
    for (const auto& s : kvq::test::segments_of(c, 2, StreamKind::key, 0)) total += s.n_tokens;
    CHECK(total == L);
    fill(c, rng, 30, false);  // keeps working after a deep rollback
    CHECK(c.length(5) == L + 30);
    std::vector<float> q(kHybridShape.n_q_heads * d, 0.1f), o(q.size());
    c.attend(5, q.data(), o.data());
    for (float x : o) CHECK(std::isfinite(x));
  }
  // Truncating below the sinks, and to zero.
  Cache c = make(kSpecs[1]);
  kvq::Rng rng(7);
  fill(c, rng, 50, false);
  c.truncate(1);
  CHECK(c.length(2) == 1);
  c.truncate(0);
  CHECK(c.length(2) == 0);
  CHECK(c.bytes_used() == 0);
}

TEST_CASE("cache: bad input is refused before anything is stored", "[cache]") {
  const std::size_t d = kHybridShape.head_dim, row = kHybridShape.n_kv_heads * d;
  Cache c = make(kSpecs[2]);
  kvq::Rng rng(8);
  fill(c, rng, 40, false);
  const auto before = snap(c);
  auto k = random_tokens(rng, 5, kHybridShape.n_kv_heads, d), v = random_tokens(rng, 5, kHybridShape.n_kv_heads, d);
  auto nan_k = k;
  nan_k[4 * row + row - 1] = std::numeric_limits<float>::quiet_NaN();  // last value of the batch
  auto inf_v = v;
  inf_v[3 * row] = -std::numeric_limits<float>::infinity();
  auto big = v;
  for (std::size_t i = 0; i < d; ++i) big[2 * row + i] = 65504.0f / std::sqrt(float(d)) * 1.001f;
  auto edge = v;  // norm just inside the domain is accepted (checked below on a copy)
  for (std::size_t i = 0; i < d; ++i) edge[i] = (i % 2 ? -1.0f : 1.0f) * 65504.0f / std::sqrt(float(d)) * 0.999f;

  CHECK(error_code([&] { c.append(2, 5, nan_k.data(), v.data()); }) == Errc::non_finite);
  CHECK(error_code([&] { c.append(2, 5, k.data(), inf_v.data()); }) == Errc::non_finite);
  CHECK(error_code([&] { c.append(2, 5, k.data(), big.data()); }) == Errc::out_of_range);
  CHECK(error_code([&] { c.append(6, k.data(), v.data()); }) == Errc::out_of_range);  // past n_layers
  CHECK(error_code([&] { c.append(3, k.data(), v.data()); }) == Errc::out_of_range);  // no KV cache
  CHECK(error_code([&] { c.append(2, 361, k.data(), v.data()); }) == Errc::out_of_range);  // past max_context
  CHECK(error_code([&] { c.append(2, 1, nullptr, v.data()); }) == Errc::invalid_argument);
  std::vector<float> q(kHybridShape.n_q_heads * d, 0.0f), o(q.size()), s(100);
  CHECK(error_code([&] { c.attend(3, q.data(), o.data()); }) == Errc::out_of_range);
  CHECK(error_code([&] { c.attend(2, 41, q.data(), o.data()); }) == Errc::out_of_range);
  CHECK(error_code([&] { c.scores(2, kHybridShape.n_q_heads, q.data(), s.data()); }) == Errc::out_of_range);
  CHECK(error_code([&] { c.length(7); }) == Errc::out_of_range);
  CHECK(error_code([&] { c.attend(2, q.data(), o.data(), std::numeric_limits<float>::quiet_NaN()); }) ==
        Errc::invalid_argument);
  CHECK(snap(c) == before);
  Cache empty = make(kSpecs[0]);
  CHECK(error_code([&] { empty.attend(2, q.data(), o.data()); }) == Errc::invalid_argument);
  // The message names the offending argument.
  try {
    c.append(2, 5, nan_k.data(), v.data());
  } catch (const kvq::Error& e) {
    CHECK(std::string(e.what()).find("k[token 4]") != std::string::npos);
  }
  // In-domain extremes are stored and demoted without overflow.
  for (std::size_t t = 0; t < 80; ++t) c.append(2, k.data(), edge.data());
  CHECK(c.length(2) == 120);
  c.attend(2, q.data(), o.data());
  for (float x : o) CHECK(std::isfinite(x));
}

TEST_CASE("cache: memory accounting is the sum of what is stored, and plan_memory projects it", "[cache]") {
  for (const char* spec : kSpecs) {
    INFO(spec);
    Cache c = make(spec);
    kvq::Rng rng(9);
    for (std::size_t step : {1, 7, 33, 64}) {
      fill(c, rng, step, step % 2 == 1);
      const auto report = c.memory();
      std::size_t sum = 0;
      for (std::size_t layer : kHybridShape.kv_layers) {
        std::size_t layer_sum = 0;
        for (StreamKind kind : {StreamKind::key, StreamKind::value})
          for (std::size_t h = 0; h < kHybridShape.n_kv_heads; ++h)
            for (const auto& s : kvq::test::segments_of(c, layer, kind, h)) layer_sum += s.bytes.size();
        CHECK(layer_sum + c.memory(layer).reserve_bytes == c.bytes_used(layer));
        sum += layer_sum + c.memory(layer).reserve_bytes;
      }
      CHECK(sum == c.bytes_used());
      if (c.spec().rollback_reserve == 0) CHECK(report.total.reserve_bytes == 0);
      const auto plan = kvq::plan_memory(kHybridShape, c.spec(), c.length(2), test_factory);
      CHECK(plan == report);
      CHECK(report.total.values == c.length(2) * 2 * kHybridShape.n_kv_heads * kHybridShape.head_dim * 2);
    }
  }
  // Seed arithmetic: q8_0 K + q4_1 V at head_dim 32 is (8.5 + 5) / 2 bits per value.
  const auto p = kvq::plan_memory(kHybridShape, CacheSpec::parse("k=q8_0,v=q4_1"), 1000);
  CHECK(p.total.bits_per_value() == Approx(6.75));
  CHECK(p.total.payload_bits_per_value() == Approx(6.75));
  CHECK(p.total.fp16_bytes() == 2 * 1000 * 2 * 2 * 32 * 2);
}

TEST_CASE("cache: clear empties every layer", "[cache]") {
  Cache c = make(kSpecs[2]);
  kvq::Rng rng(10);
  fill(c, rng, 70, true);
  c.clear();
  CHECK(c.length(2) == 0);
  CHECK(c.length(5) == 0);
  CHECK(c.bytes_used() == 0);
  CHECK(snap(c) == snap(make(kSpecs[2])));
}

TEST_CASE("cache: segments are stored in pages; capacity is the payload plus partial pages", "[cache][pool]") {
  // Long enough for several pages per segment: head_dim 32, q4_0 tiles of 18 bytes
  // (910 per page), f32 window tokens of 128 bytes.
  const ModelShape shape = ModelShape::dense(1, 2, 2, 32, 8000);
  const auto page_of = [](const kvq::AnyCodec* c) {
    return kvq::detail::tiles_per_page(c->bytes_per_tile()) * c->bytes_per_tile();
  };
  for (const char* spec : {"k=q4_0,v=q4_0", "k=q4_0,v=q4_0,window=100,sinks=4,tier=3000:q2_1/q2_1"}) {
    Cache c(shape, CacheSpec::parse(spec));
    kvq::Rng rng(6);
    const auto k = random_tokens(rng, 5000, 2, 32), v = random_tokens(rng, 5000, 2, 32);
    for (std::size_t t = 0; t < 5000; t += 250) c.append(0, 250, k.data() + t * 64, v.data() + t * 64);
    std::size_t slack = 0;  // what a page layout may add: per segment and head, a partial first and last page
    for (StreamKind kind : {StreamKind::key, StreamKind::value})
      for (std::size_t h = 0; h < 2; ++h) {
        const auto views = c.segments(0, kind, h);
        std::size_t pos = 0, most_pages = 0;
        for (const auto& s : views) {
          CHECK(s.first_position == pos);  // views tile the positions in order
          pos += s.n_tokens;
          CHECK(s.bytes.size() <= page_of(s.codec));
        }
        CHECK(pos == 5000);
        for (const auto& s : segments_of(c, 0, kind, h)) {
          most_pages = std::max(most_pages, s.pages);
          slack += 2 * page_of(s.codec);
        }
        CHECK(most_pages >= 4);
      }
    INFO(spec);
    CHECK(c.capacity_bytes() >= c.bytes_used());
    CHECK(c.capacity_bytes() - c.bytes_used() <= slack);
    // Growth never moved a stored byte: the pages of the oldest tokens stay where they were.
    const auto before = c.segments(0, StreamKind::key, 0);
    c.append(0, 250, k.data(), v.data());
    CHECK(c.segments(0, StreamKind::key, 0).front().bytes.data() == before.front().bytes.data());
  }
}

TEST_CASE("cache: a copy and a fork keep the run-time kernel settings and attend alike", "[cache]") {
  Cache c(kHybridShape, CacheSpec::parse("k=q4_0,v=q4_0,window=8"));
  kvq::Rng rng(21);
  fill(c, rng, 120, true);
  c.set_int8_scores(false);
  c.set_value_products(ValueProducts::int8);
  const Cache copy(c);
  Cache forked = c.fork();
  for (const Cache* x : {&copy, static_cast<const Cache*>(&forked)}) {
    CHECK_FALSE(x->int8_scores());
    CHECK(x->value_products() == ValueProducts::int8);
  }
  const auto q = random_tokens(rng, 1, kHybridShape.n_q_heads, kHybridShape.head_dim);
  std::vector<float> a(q.size()), b(q.size()), f(q.size());
  c.attend(kHybridShape.kv_layers[0], q.data(), a.data());
  copy.attend(kHybridShape.kv_layers[0], q.data(), b.data());
  forked.attend(kHybridShape.kv_layers[0], q.data(), f.data());
  CHECK(a == b);
  CHECK(a == f);
}
