// The fused attention pass (Cache::attend) against an independent double-
// precision attention over the cache's own decoded tiles (Cache::segments +
// decode_tile), so codec error cancels and only the pass is judged: sinks,
// windows, tiers, K and V cut into different tiles (per-channel K), turbo's
// rotated space, f32/f16 at SIMD and non-SIMD head sizes, causal prefill,
// threads and token-range splits, NaN queries, and no heap allocation once
// warmed. With int8 scores (the default) the oracle scores uniform-format keys
// with reference::dot_row_int8 on the segment bytes (every uniform format), and
// turbo keys with reference::turbo_dot_row_int8, per-channel keys with
// reference::per_channel_scores_int8; off, with f32 queries.
#include "kvq_test.hpp"
#include "support/segments.hpp"
#include "support/cache_fixtures.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>
#include <kvq/kernels/parallel.hpp>
#include <kvq/reference/int8_query.hpp>
#include <kvq/reference/uniform.hpp>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <vector>

#if !defined(KVQ_SANITIZED_BUILD) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// GCC 12 pairs the replaced operators with its built-in ones and warns falsely.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#define KVQ_COUNT_ALLOCATIONS 1
namespace {
std::atomic<long> g_allocations{0};
}
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace {

using kvq::Cache;
using kvq::StreamKind;

// [length][head_dim] decoded from one stream of one KV head.
std::vector<double> decoded(const Cache& c, std::size_t layer, StreamKind kind, std::size_t h) {
  const std::size_t d = c.shape().head_dim;
  std::vector<double> x;
  for (const auto& seg : kvq::test::segments_of(c, layer, kind, h)) {
    const std::size_t g = seg.codec->tokens_per_tile(), bt = seg.codec->bytes_per_tile();
    std::vector<float> tile(g * d);
    for (std::size_t t = 0; t < seg.n_tokens / g; ++t) {
      seg.codec->decode_tile(seg.bytes.data() + t * bt, tile.data());
      x.insert(x.end(), tile.begin(), tile.end());
    }
  }
  return x;
}

// The scores the pass computes for query q against every key of KV head h:
// with int8 scores, the int8 reference on the segment bytes for uniform
// segments; q . decode(k) in double otherwise.
template <class Block>
void int8_scores(const float* q, const kvq::SegmentView& seg, std::size_t d, std::vector<double>& s) {
  std::vector<kvq::reference::Int8QueryBlock> qb(d / 32);
  for (std::size_t b = 0; b < qb.size(); ++b) qb[b] = kvq::reference::quantize_query_block(q + b * 32);
  const std::size_t bt = seg.codec->bytes_per_tile();
  for (std::size_t t = 0; t < seg.n_tokens; ++t)
    s.push_back(kvq::reference::dot_row_int8<Block>(qb.data(), seg.bytes.data() + t * bt, d));
}
// Turbo keys (head_dim a multiple of 32): the rotated query, quantized, and
// reference::turbo_dot_row_int8 on the segment bytes.
template <unsigned B>
bool turbo_int8_scores(const float* q, const kvq::SegmentView& seg, std::size_t d, std::vector<double>& s) {
  const auto* codec = seg.codec->get_if<kvq::Turbo<B>>();
  if (codec == nullptr || d % 32 != 0) return false;
  std::vector<float> qr(d);
  codec->prepare_query(q, qr.data());
  std::vector<kvq::reference::Int8QueryBlock> qb(d / 32);
  for (std::size_t b = 0; b < qb.size(); ++b) qb[b] = kvq::reference::quantize_query_block(qr.data() + b * 32);
  const auto& cb = codec->int8_codebook();
  const std::size_t bt = codec->bytes_per_tile();
  for (std::size_t t = 0; t < seg.n_tokens; ++t)
    s.push_back(kvq::reference::turbo_dot_row_int8<B>(qb.data(), seg.bytes.data() + t * bt, d, cb.levels, cb.step));
  return true;
}
// Per-channel keys (int8 tile shapes): reference::per_channel_scores_int8 per tile.
template <unsigned B>
bool per_channel_int8_scores(const float* q, const kvq::SegmentView& seg, std::size_t d, std::vector<double>& s) {
  const auto* codec = seg.codec->get_if<kvq::PerChannel<B>>();
  if (codec == nullptr || !kvq::kernels::supports_int8_scores(*codec)) return false;
  const std::size_t g = codec->tokens_per_tile(), bt = codec->bytes_per_tile();
  std::vector<float> out(g);
  for (std::size_t t = 0; t < seg.n_tokens / g; ++t) {
    kvq::reference::per_channel_scores_int8<B>(q, seg.bytes.data() + t * bt, d, g, out.data());
    s.insert(s.end(), out.begin(), out.end());
  }
  return true;
}
std::vector<double> pass_scores(const Cache& c, std::size_t layer, std::size_t h, const float* q) {
  const std::size_t d = c.shape().head_dim;
  std::vector<double> s;
  for (const auto& seg : c.segments(layer, StreamKind::key, h)) {
    const std::string_view name = seg.codec->name();
    if (c.int8_scores() && (turbo_int8_scores<2>(q, seg, d, s) || turbo_int8_scores<3>(q, seg, d, s) ||
                            turbo_int8_scores<4>(q, seg, d, s) || per_channel_int8_scores<2>(q, seg, d, s) ||
                            per_channel_int8_scores<3>(q, seg, d, s) || per_channel_int8_scores<4>(q, seg, d, s))) {
      // int8 scores of turbo (rotated space) and per-channel tiles
    } else if (c.int8_scores() && name == "q8_0") {
      int8_scores<kvq::reference::Q8_0Block>(q, seg, d, s);
    } else if (c.int8_scores() && name == "q4_0") {
      int8_scores<kvq::reference::Q4_0Block>(q, seg, d, s);
    } else if (c.int8_scores() && name == "q4_1") {
      int8_scores<kvq::reference::Q4_1Block>(q, seg, d, s);
    } else if (c.int8_scores() && name == "q3_1") {
      int8_scores<kvq::reference::Q3_1Block>(q, seg, d, s);
    } else if (c.int8_scores() && name == "q2_1") {
      int8_scores<kvq::reference::Q2_1Block>(q, seg, d, s);
    } else {
      const std::size_t g = seg.codec->tokens_per_tile(), bt = seg.codec->bytes_per_tile();
      std::vector<float> tile(g * d);
      for (std::size_t t = 0; t < seg.n_tokens / g; ++t) {
        seg.codec->decode_tile(seg.bytes.data() + t * bt, tile.data());
        for (std::size_t i = 0; i < g; ++i) {
          double dot = 0.0;
          for (std::size_t j = 0; j < d; ++j) dot += double(q[j]) * tile[i * d + j];
          s.push_back(dot);
        }
      }
    }
  }
  return s;
}

// Causal attention over positions [0, visible) with scores `dots`, double.
std::vector<double> exact(const std::vector<double>& dots, const std::vector<double>& v, std::size_t visible,
                          std::size_t d, double scale) {
  std::vector<double> s(visible), out(d, 0.0);
  double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
  for (std::size_t t = 0; t < visible; ++t) m = std::max(m, s[t] = scale * dots[t]);
  for (std::size_t t = 0; t < visible; ++t) sum += s[t] = std::exp(s[t] - m);
  for (std::size_t t = 0; t < visible; ++t)
    for (std::size_t j = 0; j < d; ++j) out[j] += s[t] / sum * v[t * d + j];
  return out;
}

// Max |out - exact| over every query head and position, relative to max |v|.
double attend_error(const Cache& c, std::size_t layer, std::size_t n_pos, const std::vector<float>& q,
                    const std::vector<float>& out) {
  const auto& s = c.shape();
  const std::size_t d = s.head_dim, g = s.group_size(), n = c.length(layer);
  double err = 0.0, vmax = 0.0;
  for (std::size_t h = 0; h < s.n_kv_heads; ++h) {
    const auto v = decoded(c, layer, StreamKind::value, h);
    REQUIRE(v.size() == n * d);
    for (double x : v) vmax = std::max(vmax, std::fabs(x));
    for (std::size_t p = 0; p < n_pos; ++p)
      for (std::size_t j = 0; j < g; ++j) {
        const std::size_t qh = h * g + j, off = (p * s.n_q_heads + qh) * d;
        const auto dots = pass_scores(c, layer, h, q.data() + off);
        REQUIRE(dots.size() == n);
        const auto ref = exact(dots, v, n - n_pos + p + 1, d, 1.0 / std::sqrt(double(d)));
        for (std::size_t i = 0; i < d; ++i) err = std::max(err, std::fabs(out[off + i] - ref[i]));
      }
  }
  return err / vmax;
}

struct Case {
  const char* spec;
  std::size_t head_dim, q_heads, kv_heads, tokens;
};

const Case kCases[] = {
    {"k=q4_0,v=q4_0", 128, 4, 1, 300},
    {"k=q8_0,v=q2_1,window=16,sinks=3", 64, 8, 2, 400},
    {"k=q4_1,v=q8_0,window=4,sinks=2,tier=40:q2_1/q2_1", 32, 2, 1, 333},
    {"k=pc4,v=q4_0,window=8,sinks=1", 64, 4, 1, 700},     // 128-token K tiles beside row V
    {"k=q4_0,v=pc3,window=5", 32, 1, 1, 600},             // and the other way round
    {"k=pc2,v=pc4/g64,window=3", 32, 3, 1, 500},          // two multi-token tilings
    {"k=pc3/g64,v=q4_0,tier=200:pc4/q4_0", 64, 2, 1, 600},  // pc3/g64 keeps f32 scores beside int8 pc4
    {"k=turbo3,v=q3_1,window=2,precision=f16", 64, 4, 2, 260},
    {"k=q8_0,v=turbo4,window=7", 96, 2, 1, 300},          // dense rotation, V in rotated space
    {"k=turbo2,v=turbo4", 128, 8, 1, 200},
    {"k=f16,v=f16", 128, 4, 1, 300},
    {"k=f32,v=f16", 40, 2, 1, 150},                        // head_dim 40: no SIMD exact kernel
    {"k=q8_0,v=q8_0,window=8,tier=40:q2_1/q2_1,tier=100:turbo2/turbo2", 64, 4, 2, 300},  // int8 beside f32 runs
    {"k=q3_1,v=q4_0,window=3", 96, 4, 1, 250},             // odd block count (2-block int8 groups)
    {"k=turbo4,v=q4_0,window=4,tier=60:q4_0/q4_0,tier=150:turbo2/turbo2", 64, 4, 1, 320},  // rotated and model-space int8 runs
    {"k=turbo3,v=turbo3", 96, 2, 1, 200},                  // dense rotation, 3 int8 blocks
    {"k=turbo4,v=turbo4", 112, 2, 1, 120},                 // 112: turbo keys keep f32 scores
};

}  // namespace

TEST_CASE("Cache::attend (fused pass) equals double-precision attention over the decoded cache", "[cache][fused]") {
  for (const bool int8 : {true, false})
  for (const Case& tc : kCases) {
    INFO(tc.spec << " d=" << tc.head_dim << " heads " << tc.q_heads << "/" << tc.kv_heads << " int8 " << int8);
    const kvq::CacheSpec spec = kvq::CacheSpec::parse(tc.spec);
    Cache c(kvq::ModelShape::dense(1, tc.q_heads, tc.kv_heads, tc.head_dim, 4096), spec);
    CHECK(c.int8_scores());  // the default
    c.set_int8_scores(int8);
    kvq::Rng rng(17);
    const std::size_t d = tc.head_dim, hq = tc.q_heads;
    const auto k = kvq::test::random_tokens(rng, tc.tokens, tc.kv_heads, d);
    const auto v = kvq::test::random_tokens(rng, tc.tokens, tc.kv_heads, d);
    // Queries with a strong component along a few keys, so the softmax is peaked
    // at places (running-max updates inside the pass) and flat elsewhere.
    for (std::size_t t = 0; t < tc.tokens; ++t) {
      c.append(0, k.data() + t * tc.kv_heads * d, v.data() + t * tc.kv_heads * d);
      if (t % 97 != 0 && t + 1 != tc.tokens) continue;
      auto q = kvq::test::random_tokens(rng, 1, hq, d, 0.7);
      for (std::size_t i = 0; i < hq * d; ++i) q[i] += 0.25f * k[(t / 2) * tc.kv_heads * d + (i / d / (hq / tc.kv_heads)) * d + i % d];
      std::vector<float> out(hq * d);
      c.attend(0, q.data(), out.data());
      CHECK(attend_error(c, 0, 1, q, out) < 2e-5);
    }
    // Causal prefill over the last 37 positions.
    const std::size_t n_pos = 37;
    const auto q = kvq::test::random_tokens(rng, n_pos, hq, d);
    std::vector<float> out(n_pos * hq * d);
    c.attend(0, n_pos, q.data(), out.data());
    CHECK(attend_error(c, 0, n_pos, q, out) < 2e-5);
  }
}

TEST_CASE("Cache::attend on threads and token ranges equals one thread", "[cache][fused][parallel]") {
  // One KV head and a long context: with 4 threads the pass splits the
  // tokens into ranges merged by log-sum-exp.
  for (const char* spec : {"k=q4_0,v=q4_1,window=64,sinks=4", "k=pc4,v=q8_0,window=30", "k=turbo4,v=turbo3"}) {
    INFO(spec);
    const std::size_t d = 64, n = 20000;
    Cache c(kvq::ModelShape::dense(1, 4, 1, d, n), kvq::CacheSpec::parse(spec));
    kvq::Rng rng(3);
    const auto k = kvq::test::random_tokens(rng, n, 1, d), v = kvq::test::random_tokens(rng, n, 1, d);
    c.append(0, n, k.data(), v.data());
    const auto q = kvq::test::random_tokens(rng, 3, 4, d, 2.0);
    std::vector<float> one(q.size()), four(q.size()), pooled(q.size());
    c.attend(0, 3, q.data(), one.data());
    c.attend(0, 3, q.data(), four.data(), kvq::detail::SerialFor{}, 4);
    kvq::kernels::ThreadPool pool(2);
    c.attend(0, 3, q.data(), pooled.data(), pool);
    for (std::size_t i = 0; i < q.size(); ++i) {
      CHECK(std::fabs(four[i] - one[i]) <= 1e-5f * (1.0f + std::fabs(one[i])));
      CHECK(std::fabs(pooled[i] - one[i]) <= 1e-5f * (1.0f + std::fabs(one[i])));
    }
    CHECK(attend_error(c, 0, 3, q, four) < 2e-5);
  }
}

TEST_CASE("Cache::attend: a NaN query poisons only its own head", "[cache][fused]") {
  Cache c(kvq::ModelShape::dense(1, 4, 2, 32, 64), kvq::CacheSpec::parse("k=q4_0,v=q8_0,window=4"));
  kvq::Rng rng(1);
  const auto k = kvq::test::random_tokens(rng, 40, 2, 32), v = kvq::test::random_tokens(rng, 40, 2, 32);
  c.append(0, 40, k.data(), v.data());
  auto q = kvq::test::random_tokens(rng, 1, 4, 32);
  q[2 * 32 + 5] = std::numeric_limits<float>::quiet_NaN();  // query head 2 (KV head 1)
  std::vector<float> out(4 * 32);
  c.attend(0, q.data(), out.data());
  for (std::size_t h = 0; h < 4; ++h)
    for (std::size_t i = 0; i < 32; ++i) CHECK(std::isnan(out[h * 32 + i]) == (h == 2));
}

#ifdef KVQ_COUNT_ALLOCATIONS
TEST_CASE("Cache::attend allocates nothing once warmed", "[cache][fused]") {
  for (const char* spec : {"k=q4_0,v=q4_0,window=32,sinks=4", "k=pc4,v=turbo4,window=8", "k=f16,v=f16",
                           "k=q4_0,v=q4_0,window=32,heavy=64"}) {
    INFO(spec);
    const std::size_t d = 128, n = 3000;
    Cache c(kvq::ModelShape::dense(2, 8, 2, d, n + 8), kvq::CacheSpec::parse(spec));
    kvq::Rng rng(4);
    const auto k = kvq::test::random_tokens(rng, n, 2, d), v = kvq::test::random_tokens(rng, n, 2, d);
    c.append(0, n, k.data(), v.data());
    c.append(1, n, k.data(), v.data());
    const auto q = kvq::test::random_tokens(rng, 4, 8, d);
    std::vector<float> out(q.size());
    kvq::kernels::ThreadPool pool(2);
    c.attend(0, 4, q.data(), out.data());  // warm-up: this thread's workspace grows once
    c.attend(0, 4, q.data(), out.data(), pool);
    c.attend(0, 4, q.data(), out.data(), pool);
    const long before = g_allocations.load();
    for (int step = 0; step < 5; ++step) {
      c.attend(0, q.data(), out.data());
      c.attend(1, q.data(), out.data());
      c.attend(1, 4, q.data(), out.data());
    }
    CHECK(g_allocations.load() == before);
  }
}
#endif

TEST_CASE("Cache::attend with bf16 or int8 value products stays within their bounds of f32", "[cache][fused]") {
  // The output is a convex combination of values. bf16: one rounding of each
  // weight times scale, |err| <= 2^-8 max_t |d c_t| <= 2^-7 max|v| (|d c| <=
  // max - min of a block; 1 % for the fp16 scale). int8: per tile of 32 rows
  // the products move by half a step, max_tile(w d) / 254; with equal weights
  // (zero queries) that is |err| <= max|d c| / 254 <= max|v| / 127, and with
  // any weights (sum of the tiles' largest weights <= 1, 32 rows) 32x that.
  for (const char* spec : {"k=q4_0,v=q4_0", "k=q8_0,v=q4_1,window=16,sinks=3", "k=q4_0,v=q3_1,tier=50:q2_1/q2_1",
                           "k=pc4,v=q4_1,window=8", "k=q8_0,v=q8_0"})
    for (const bool flat : {false, true}) {
      INFO(spec << " flat " << flat << " bf16 path active " << kvq::kernels::bf16_accumulate_active());
      const std::size_t d = 64, hq = 8, n = 500, n_pos = 5;
      Cache c(kvq::ModelShape::dense(1, hq, 1, d, 4096), kvq::CacheSpec::parse(spec));
      CHECK(c.value_products() == kvq::ValueProducts::f32);  // the default
      kvq::Rng rng(23);
      const auto k = kvq::test::random_tokens(rng, n, 1, d), v = kvq::test::random_tokens(rng, n, 1, d);
      c.append(0, n, k.data(), v.data());
      float vmax = 0.0f;
      for (float x : v) vmax = std::max(vmax, std::fabs(x));
      auto q = kvq::test::random_tokens(rng, n_pos, hq, d, 2.0);
      if (flat) std::fill(q.begin(), q.end(), 0.0f);
      std::vector<float> f32(q.size()), got(q.size());
      c.attend(0, n_pos, q.data(), f32.data());
      for (const auto vp : {kvq::ValueProducts::bf16, kvq::ValueProducts::int8}) {
        c.set_value_products(vp);
        c.attend(0, n_pos, q.data(), got.data());
        c.set_value_products(kvq::ValueProducts::f32);
        const float bound = 1.01f * vmax * (vp == kvq::ValueProducts::bf16 ? 1.0f / 128 : flat ? 1.0f / 127 : 32.0f / 127) + 1e-5f;
        for (std::size_t i = 0; i < q.size(); ++i) {
          INFO("products " << static_cast<int>(vp) << " value " << i << " f32 " << f32[i] << " got " << got[i] << " bound " << bound);
          REQUIRE(std::fabs(got[i] - f32[i]) <= bound);
        }
        // bf16 without the CPU feature is f32.
        if (vp == kvq::ValueProducts::bf16 && !kvq::kernels::bf16_accumulate_active()) CHECK(got == f32);
      }
    }
}

TEST_CASE("Cache::attend with int8 products of turbo values stays within their bound of f32", "[cache][fused]") {
  // Turbo values accumulate in rotated space (kernels::accumulate_int8 for
  // turbo rows): with equal weights (zero queries) each rotated coordinate
  // moves by at most s/2 per row times |l| <= 127 (s = max|w alpha s_L| / 127),
  // i.e. max|y| / 254 summed over the weights, plus the codebook's rounding
  // e_L <= max|L| / 254: at most max|y| / 127 per coordinate, and the inverse
  // rotation keeps the Euclidean norm: |err|_2 <= sqrt(d) max|y| / 127.
  for (const char* spec : {"k=q4_0,v=turbo4", "k=turbo3,v=turbo2,window=8", "k=q8_0,v=turbo3,tier=100:q4_0/turbo4"}) {
    INFO(spec << " target " << kvq::kernels::target_name());
    const std::size_t d = 64, hq = 4, n = 300, n_pos = 3;
    Cache c(kvq::ModelShape::dense(1, hq, 1, d, 4096), kvq::CacheSpec::parse(spec));
    kvq::Rng rng(29);
    const auto k = kvq::test::random_tokens(rng, n, 1, d), v = kvq::test::random_tokens(rng, n, 1, d);
    c.append(0, n, k.data(), v.data());
    double ymax = 0.0;  // max |alpha L[idx]| over the turbo values, a bound from alpha and max|L|
    for (const auto& seg : c.segments(0, StreamKind::value, 0)) {
      double lmax = 0.0;
      if (const auto* t4 = seg.codec->get_if<kvq::Turbo4>()) lmax = std::fabs(t4->levels().front());
      if (const auto* t3 = seg.codec->get_if<kvq::Turbo3>()) lmax = std::fabs(t3->levels().front());
      if (const auto* t2 = seg.codec->get_if<kvq::Turbo2>()) lmax = std::fabs(t2->levels().front());
      const std::size_t bt = seg.codec->bytes_per_tile();
      for (std::size_t t = 0; t < seg.n_tokens && lmax > 0.0; ++t)
        ymax = std::max(ymax, lmax * std::fabs(kvq::half_bits_to_float(kvq::bits::load_u16(seg.bytes.data() + t * bt))));
    }
    REQUIRE(ymax > 0.0);
    std::vector<float> q(n_pos * hq * d, 0.0f), f32(q.size()), got(q.size());
    c.attend(0, n_pos, q.data(), f32.data());
    c.set_value_products(kvq::ValueProducts::int8);
    c.attend(0, n_pos, q.data(), got.data());
    const double bound = 1.01 * std::sqrt(double(d)) * ymax / 127 + 1e-5;
    for (std::size_t i = 0; i < n_pos * hq; ++i) {
      double e2 = 0.0;
      for (std::size_t j = 0; j < d; ++j) e2 += std::pow(double(got[i * d + j]) - f32[i * d + j], 2);
      INFO("output " << i << " |err| " << std::sqrt(e2) << " bound " << bound);
      REQUIRE(std::sqrt(e2) <= bound);
    }
    if (std::string(kvq::kernels::target_name()) == "AVX3_DL") CHECK(got != f32);  // the int8 path ran
  }
}
