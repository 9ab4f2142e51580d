// Shared pieces of the cache tests: random K/V, the real K/V dumps laid out
// the way the cache takes them, and an independent attention in double
// precision (Eigen) that knows nothing of the cache.
#pragma once

#include "kvq_test.hpp"
#include "npy.hpp"  // tools/common

#include <kvq/cache/snapshot.hpp>
#include <kvq/core/rng.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

namespace kvq::test {

// [n][n_heads][dim] normal values.
inline std::vector<float> random_tokens(Rng& rng, std::size_t n, std::size_t heads, std::size_t dim, double sd = 1.0) {
  std::vector<float> x(n * heads * dim);
  for (auto& v : x) v = static_cast<float>(sd * rng.normal());
  return x;
}

// The first `layers` layers and `tokens` tokens of the wt2-byte-a dumps,
// re-laid out as the cache consumes them: k/v [layer][t][kv_head][dim],
// q [layer][t][q_head][dim]. Empty when ../shared is absent.
struct RealDump {
  std::size_t layers = 0, tokens = 0, q_heads = 0, kv_heads = 0, dim = 0;
  std::vector<float> q, k, v;
  const float* k_at(std::size_t l, std::size_t t) const { return k.data() + (l * tokens + t) * kv_heads * dim; }
  const float* v_at(std::size_t l, std::size_t t) const { return v.data() + (l * tokens + t) * kv_heads * dim; }
  const float* q_at(std::size_t l, std::size_t t) const { return q.data() + (l * tokens + t) * q_heads * dim; }
  ModelShape shape(std::size_t max_context = 0) const {
    return ModelShape::dense(layers, q_heads, kv_heads, dim, max_context ? max_context : tokens);
  }
};

inline std::optional<RealDump> load_real_dump(std::size_t layers, std::size_t tokens) {
  const auto dir = shared_dir();
  if (dir.empty()) return std::nullopt;
  const auto base = dir / "data" / "kv-dumps" / "wt2-byte-a";
  if (!std::filesystem::exists(base / "k.npy")) return std::nullopt;
  // The [0, layers) x all heads x [0, tokens) x dim box of a [layers, heads, T, dim] dump,
  // re-laid out [layer][t][head][dim].
  struct Box {
    std::size_t layers = 0, heads = 0, tokens = 0, dim = 0;
    std::vector<float> data;
  };
  auto box = [&](const char* file) {
    const std::filesystem::path path = base / file;
    const tools::NpyArray a = tools::read_npy(path);
    kvq::detail::require(a.ndim() == 4, Errc::shape_mismatch, path.string() + ": expected [layers, heads, T, dim]");
    const std::size_t L = a.shape[0], H = a.shape[1], T = a.shape[2], D = a.shape[3];
    Box b{std::min(layers, L), H, std::min(tokens, T), D, {}};
    b.data.resize(b.layers * b.tokens * H * D);
    for (std::size_t l = 0; l < b.layers; ++l)
      for (std::size_t t = 0; t < b.tokens; ++t)
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t d = 0; d < D; ++d)
            b.data[((l * b.tokens + t) * H + h) * D + d] = a.data[((l * H + h) * T + t) * D + d];
    return b;
  };
  Box q = box("q.npy"), k = box("k.npy"), v = box("v.npy");
  RealDump d;
  d.layers = k.layers;
  d.tokens = k.tokens;
  d.q_heads = q.heads;
  d.kv_heads = k.heads;
  d.dim = k.dim;
  d.q = std::move(q.data);
  d.k = std::move(k.data);
  d.v = std::move(v.data);
  return d;
}

// Exact causal attention in double for query head `qh` at position `pos`
// over keys/values [0, pos]: k and v are [t][kv_heads][dim].
inline Eigen::VectorXd reference_attention(const float* q, const float* k, const float* v, std::size_t pos,
                                           std::size_t kv_heads, std::size_t dim, std::size_t kv_head,
                                           double scale) {
  const std::size_t n = pos + 1;
  Eigen::MatrixXd K(n, dim), V(n, dim);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t d = 0; d < dim; ++d) {
      K(t, d) = k[(t * kv_heads + kv_head) * dim + d];
      V(t, d) = v[(t * kv_heads + kv_head) * dim + d];
    }
  Eigen::VectorXd qv(dim);
  for (std::size_t d = 0; d < dim; ++d) qv(d) = q[d];
  Eigen::VectorXd s = (K * qv) * scale;
  s = (s.array() - s.maxCoeff()).exp();
  s /= s.sum();
  return V.transpose() * s;
}

inline std::vector<std::byte> snap(const Cache& c) { return snapshot_bytes(c); }

template <class F>
Errc error_code(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("no kvq::Error thrown");
  return Errc::io_error;
}

}  // namespace kvq::test
