// Attention error of a cache configuration on real Q/K/V dumps: the engine of `kvq eval`.
//
// Input: q.npy [layers, q_heads, T, head_dim], k.npy and v.npy [layers, kv_heads, T, head_dim]
// (float16 or float32; Q and K post-RoPE), query head h reading KV head h / (q_heads / kv_heads).
// Every layer's T tokens are appended one at a time to a kvq::Cache of the given spec; right
// after token p is appended, if p is a sampled query position, the query at p is run through
// the cache (Cache::scores for the raw scores, Cache::attend for the output) and compared with
// exact attention over tokens [0, p] computed in double from the dump. That is exactly what a
// decoding engine sees at step p (its recent window, sinks and tiers as they stand then), and
// it needs no truncated views. K and V errors are measured on the cache's final state (all T
// tokens held), decoding every stored tile. Bits/value are the bytes the cache holds at T.
#pragma once

#include "npy.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/model_shape.hpp>
#include <kvq/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace kvq::tools {

struct KvDumps {
  std::size_t layers = 0, q_heads = 0, kv_heads = 0, tokens = 0, head_dim = 0;
  std::vector<float> q, k, v;  // [layer][head][t][d], tokens possibly cut to `tokens`

  const float* q_at(std::size_t l, std::size_t h, std::size_t t) const {
    return q.data() + ((l * q_heads + h) * tokens + t) * head_dim;
  }
  const float* k_at(std::size_t l, std::size_t h, std::size_t t) const {
    return k.data() + ((l * kv_heads + h) * tokens + t) * head_dim;
  }
  const float* v_at(std::size_t l, std::size_t h, std::size_t t) const {
    return v.data() + ((l * kv_heads + h) * tokens + t) * head_dim;
  }
};

// Reads dir/{q,k,v}.npy; keeps the first `max_tokens` tokens (0: all).
inline KvDumps load_kv_dumps(const std::filesystem::path& dir, std::size_t max_tokens = 0) {
  auto q = read_npy(dir / "q.npy"), k = read_npy(dir / "k.npy"), v = read_npy(dir / "v.npy");
  auto bad = [&](const std::string& why) { kvq::detail::fail(Errc::shape_mismatch, dir.string() + ": " + why); };
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) bad("q/k/v.npy must be 4-D [layers, heads, T, head_dim]");
  if (k.shape != v.shape) bad("k.npy and v.npy differ in shape");
  if (q.shape[0] != k.shape[0] || q.shape[2] != k.shape[2] || q.shape[3] != k.shape[3])
    bad("q.npy and k.npy differ in layers, T or head_dim");
  if (k.shape[1] == 0 || q.shape[1] % k.shape[1] != 0) bad("q heads are not a multiple of the KV heads");
  if (q.shape[0] == 0 || q.shape[2] == 0 || q.shape[3] == 0) bad("empty dump");
  KvDumps d;
  d.layers = q.shape[0];
  d.q_heads = q.shape[1];
  d.kv_heads = k.shape[1];
  d.head_dim = q.shape[3];
  const std::size_t T = q.shape[2];
  d.tokens = max_tokens ? std::min(max_tokens, T) : T;
  auto cut = [&](const NpyArray& a, std::size_t heads) {
    if (d.tokens == T) return a.data;
    std::vector<float> out(d.layers * heads * d.tokens * d.head_dim);
    for (std::size_t lh = 0; lh < d.layers * heads; ++lh)
      std::copy_n(a.data.data() + lh * T * d.head_dim, d.tokens * d.head_dim, out.data() + lh * d.tokens * d.head_dim);
    return out;
  };
  d.q = cut(q, d.q_heads);
  d.k = cut(k, d.kv_heads);
  d.v = cut(v, d.kv_heads);
  return d;
}

// Squared-error sums, so layers combine by addition; ratios are taken at the end.
struct EvalStats {
  double k_err2 = 0, k_ref2 = 0, v_err2 = 0, v_ref2 = 0;  // final cache state vs dump
  double s_err2 = 0, s_ref2 = 0;                          // raw scores q.k over visible keys
  double o_err2 = 0, o_ref2 = 0;                          // attention output
  double kl_sum = 0, kl_max = 0;                          // KL(exact || cache) per (query, head)
  std::size_t n_queries = 0;                              // (position, query head) pairs
  std::size_t k_bytes = 0, v_bytes = 0, values = 0;       // values per stream (K or V)

  static double rel(double e, double r) { return r > 0 ? std::sqrt(e / r) : 0.0; }
  double k_rel() const { return rel(k_err2, k_ref2); }
  double v_rel() const { return rel(v_err2, v_ref2); }
  double score_rel() const { return rel(s_err2, s_ref2); }
  double out_rel() const { return rel(o_err2, o_ref2); }
  double kl_mean() const { return n_queries ? kl_sum / double(n_queries) : 0.0; }
  double k_bits() const { return values ? 8.0 * double(k_bytes) / double(values) : 0.0; }
  double v_bits() const { return values ? 8.0 * double(v_bytes) / double(values) : 0.0; }
  double bits() const { return values ? 4.0 * double(k_bytes + v_bytes) / double(values) : 0.0; }

  EvalStats& operator+=(const EvalStats& o) {
    k_err2 += o.k_err2, k_ref2 += o.k_ref2, v_err2 += o.v_err2, v_ref2 += o.v_ref2;
    s_err2 += o.s_err2, s_ref2 += o.s_ref2, o_err2 += o.o_err2, o_ref2 += o.o_ref2;
    kl_sum += o.kl_sum, kl_max = std::max(kl_max, o.kl_max), n_queries += o.n_queries;
    k_bytes += o.k_bytes, v_bytes += o.v_bytes, values += o.values;
    return *this;
  }
};

struct EvalOptions {
  std::size_t stride = 16;  // query positions stride-1, 2*stride-1, ..., and T-1
  float scale = 0.0f;       // softmax scale; 0: 1/sqrt(head_dim)
  std::vector<std::size_t> layers;  // empty: all
};

struct EvalResult {
  CacheSpec spec;
  std::vector<std::size_t> layer_ids;
  std::vector<EvalStats> layers;
  EvalStats total;
};

namespace detail {
// Decoded final state of one stream of one KV head vs the dump: adds to err2/ref2.
inline void stream_error(const kvq::Cache& cache, std::size_t layer, kvq::StreamKind kind, std::size_t h,
                         const float* ref, std::size_t d, double& err2, double& ref2, std::size_t& bytes) {
  std::vector<float> tile;
  for (const auto& seg : cache.segments(layer, kind, h)) {
    bytes += seg.bytes.size();
    if (seg.n_tokens == 0) continue;
    const std::size_t g = seg.codec->tokens_per_tile(), bt = seg.codec->bytes_per_tile();
    tile.resize(g * d);
    for (std::size_t t0 = 0; t0 < seg.n_tokens; t0 += g) {
      seg.codec->decode_tile(seg.bytes.data() + (t0 / g) * bt, tile.data());
      for (std::size_t i = 0; i < g * d; ++i) {
        const double r = ref[(seg.first_position + t0) * d + i];
        err2 += (tile[i] - r) * (tile[i] - r);
        ref2 += r * r;
      }
    }
  }
}
}  // namespace detail

inline EvalResult evaluate_cache(const KvDumps& dumps, const CacheSpec& spec, const EvalOptions& opt = {}) {
  const std::size_t L = dumps.layers, HQ = dumps.q_heads, HK = dumps.kv_heads, T = dumps.tokens, D = dumps.head_dim;
  const std::size_t group = HQ / HK;
  kvq::detail::require(opt.stride > 0, Errc::invalid_argument, "query stride must be positive");
  const double scale = opt.scale > 0 ? opt.scale : 1.0 / std::sqrt(double(D));
  EvalResult res;
  res.spec = spec;
  res.layer_ids = opt.layers;
  if (res.layer_ids.empty())
    for (std::size_t l = 0; l < L; ++l) res.layer_ids.push_back(l);
  for (std::size_t l : res.layer_ids)
    kvq::detail::require(l < L, Errc::out_of_range,
                         "layer " + std::to_string(l) + " is out of range (the dump has " + std::to_string(L) + " layers)");

  kvq::Cache cache(kvq::ModelShape::dense(L, HQ, HK, D, T), spec);
  std::vector<float> krow(HK * D), vrow(HK * D), qrow(HQ * D), out(HQ * D), s_hat(T);
  std::vector<double> s(T), p(T), o(D);
  for (std::size_t l : res.layer_ids) {
    EvalStats st;
    for (std::size_t t = 0; t < T; ++t) {
      for (std::size_t h = 0; h < HK; ++h) {
        std::copy_n(dumps.k_at(l, h, t), D, krow.data() + h * D);
        std::copy_n(dumps.v_at(l, h, t), D, vrow.data() + h * D);
      }
      cache.append(l, krow.data(), vrow.data());
      if ((t + 1) % opt.stride != 0 && t + 1 != T) continue;
      const std::size_t n = t + 1;
      for (std::size_t h = 0; h < HQ; ++h) std::copy_n(dumps.q_at(l, h, t), D, qrow.data() + h * D);
      cache.attend(l, qrow.data(), out.data(), static_cast<float>(scale));
      for (std::size_t h = 0; h < HQ; ++h) {
        const float* q = qrow.data() + h * D;
        const std::size_t g = h / group;
        cache.scores(l, h, q, s_hat.data());
        double mx = -std::numeric_limits<double>::infinity(), mx_hat = mx;
        for (std::size_t j = 0; j < n; ++j) {
          const float* k = dumps.k_at(l, g, j);
          double dot = 0.0;
          for (std::size_t i = 0; i < D; ++i) dot += double(q[i]) * double(k[i]);
          s[j] = dot;
          st.s_err2 += (s_hat[j] - dot) * (s_hat[j] - dot);
          st.s_ref2 += dot * dot;
          mx = std::max(mx, scale * dot);
          mx_hat = std::max(mx_hat, scale * double(s_hat[j]));
        }
        double z = 0.0, z_hat = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
          z += std::exp(scale * s[j] - mx);
          z_hat += std::exp(scale * double(s_hat[j]) - mx_hat);
        }
        const double lz = mx + std::log(z), lz_hat = mx_hat + std::log(z_hat);
        double kl = 0.0;
        std::fill(o.begin(), o.end(), 0.0);
        for (std::size_t j = 0; j < n; ++j) {
          const double lp = scale * s[j] - lz, lp_hat = scale * double(s_hat[j]) - lz_hat;
          p[j] = std::exp(lp);
          kl += p[j] * (lp - lp_hat);
          const float* v = dumps.v_at(l, g, j);
          for (std::size_t i = 0; i < D; ++i) o[i] += p[j] * double(v[i]);
        }
        kl = std::max(kl, 0.0);  // rounding can push a near-zero KL below 0
        st.kl_sum += kl;
        st.kl_max = std::max(st.kl_max, kl);
        ++st.n_queries;
        for (std::size_t i = 0; i < D; ++i) {
          const double e = double(out[h * D + i]) - o[i];
          st.o_err2 += e * e;
          st.o_ref2 += o[i] * o[i];
        }
      }
    }
    for (std::size_t h = 0; h < HK; ++h) {
      detail::stream_error(cache, l, kvq::StreamKind::key, h, dumps.k_at(l, h, 0), D, st.k_err2, st.k_ref2, st.k_bytes);
      detail::stream_error(cache, l, kvq::StreamKind::value, h, dumps.v_at(l, h, 0), D, st.v_err2, st.v_ref2,
                           st.v_bytes);
    }
    st.values = T * HK * D;
    res.layers.push_back(st);
    res.total += st;
  }
  return res;
}

}  // namespace kvq::tools
