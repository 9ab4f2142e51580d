// The demo's data: Q/K/V of a model, token-major as an engine hands them to a
// kvq::Cache, read from the real wt2-byte-a dumps or generated with the
// statistics of real K when the dumps are absent.
#pragma once

#include "kv_eval.hpp"  // tools/common: the .npy dump reader

#include <kvq/cache/model_shape.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace kvq_demo {

// Q/K/V of every layer, token-major as an engine hands them to the cache:
// k, v are [layer][t][kv_head][d], q is [layer][t][q_head][d].
struct Activations {
  kvq::ModelShape shape;
  std::size_t tokens = 0;
  std::vector<float> q, k, v;
  std::string source;

  std::size_t kv_stride() const { return shape.n_kv_heads * shape.head_dim; }
  std::size_t q_stride() const { return shape.n_q_heads * shape.head_dim; }
  const float* k_at(std::size_t l, std::size_t t) const { return &k[(l * tokens + t) * kv_stride()]; }
  const float* v_at(std::size_t l, std::size_t t) const { return &v[(l * tokens + t) * kv_stride()]; }
  const float* q_at(std::size_t l, std::size_t t) const { return &q[(l * tokens + t) * q_stride()]; }
};

// [layer][head][t][d] -> [layer][t][head][d].
inline std::vector<float> token_major(const std::vector<float>& x, std::size_t layers, std::size_t heads,
                                      std::size_t T, std::size_t d) {
  std::vector<float> out(x.size());
  for (std::size_t l = 0; l < layers; ++l)
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t t = 0; t < T; ++t)
        std::copy_n(&x[((l * heads + h) * T + t) * d], d, &out[((l * T + t) * heads + h) * d]);
  return out;
}

inline Activations real_activations(const std::filesystem::path& dir, std::size_t tokens) {
  const kvq::tools::KvDumps d = kvq::tools::load_kv_dumps(dir, tokens);
  Activations a;
  a.shape = kvq::ModelShape::dense(d.layers, d.q_heads, d.kv_heads, d.head_dim, d.tokens);
  a.tokens = d.tokens;
  a.q = token_major(d.q, d.layers, d.q_heads, d.tokens, d.head_dim);
  a.k = token_major(d.k, d.layers, d.kv_heads, d.tokens, d.head_dim);
  a.v = token_major(d.v, d.layers, d.kv_heads, d.tokens, d.head_dim);
  a.source = "real Q/K/V of the wt2-byte-a model (" + std::filesystem::weakly_canonical(dir).string() + ")";
  return a;
}

inline float fp16_value(double x) { return kvq::half_bits_to_float(kvq::float_to_half_bits(static_cast<float>(x))); }

// wt2-byte-a's geometry with the traits its stats.txt reports for real K: per-
// channel offsets up to ~3 standard deviations (strongest on the slowly
// rotating RoPE pairs, the upper half of head_dim), one outlier channel pair
// per head with 2.5x the spread, K rms ~1.4, V rms ~0.6. Queries point at a
// recent key (geometric lag, mean ~7) plus noise, so attention is sharp and
// recent, as in a real model. Values are fp16, as the real dumps are.
inline Activations synthetic_activations(std::size_t tokens, const std::string& why) {
  const std::size_t L = 8, HQ = 8, HK = 2, D = 64, G = HQ / HK;
  Activations a;
  a.shape = kvq::ModelShape::dense(L, HQ, HK, D, tokens);
  a.tokens = tokens;
  a.q.resize(L * tokens * HQ * D);
  a.k.resize(L * tokens * HK * D);
  a.v.resize(a.k.size());
  a.source = "SYNTHETIC Q/K/V with the statistics of real K (" + why + "): the errors are indicative only";
  kvq::Rng rng(2026);
  std::vector<double> offset(HK * D), spread(HK * D);
  for (std::size_t l = 0; l < L; ++l) {
    for (std::size_t c = 0; c < HK * D; ++c) {
      const bool slow_pair = c % D >= D / 2, outlier = (c % D) / 2 == (l * 7 + c / D * 5) % (D / 2);
      offset[c] = rng.normal() * (slow_pair ? 1.5 : 0.3);
      spread[c] = (0.8 + 0.4 * rng.uniform()) * (outlier ? 2.5 : 1.0);
    }
    for (std::size_t t = 0; t < tokens; ++t) {
      float* k = &a.k[(l * tokens + t) * HK * D];
      float* v = &a.v[(l * tokens + t) * HK * D];
      for (std::size_t c = 0; c < HK * D; ++c) {
        k[c] = fp16_value(offset[c] + spread[c] * rng.normal());
        v[c] = fp16_value(0.6 * rng.normal());
      }
      float* q = &a.q[(l * tokens + t) * HQ * D];
      for (std::size_t h = 0; h < HQ; ++h) {
        std::size_t lag = 0;
        while (lag < t && rng.uniform() > 0.12) ++lag;
        const float* target = &a.k[(l * tokens + t - lag) * HK * D + h / G * D];
        for (std::size_t i = 0; i < D; ++i)
          q[h * D + i] = fp16_value(1.2 * (target[i] - offset[h / G * D + i]) + 0.7 * rng.normal());
      }
    }
  }
  return a;
}

}  // namespace kvq_demo
