// Synthetic Q/K/V dumps for the evaluation-tool tests: Gaussian K and V, queries at twice the scale.
#pragma once

#include "kv_eval.hpp"

#include <cstddef>
#include <cstdint>
#include <random>

namespace kvq::test {

inline kvq::tools::KvDumps synthetic_dumps(std::size_t L, std::size_t HQ, std::size_t HK, std::size_t T, std::size_t D,
                                           std::uint32_t seed) {
  kvq::tools::KvDumps d{L, HQ, HK, T, D, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  d.q.resize(L * HQ * T * D);
  d.k.resize(L * HK * T * D);
  d.v.resize(d.k.size());
  for (auto& x : d.q) x = 2.0f * n01(rng);
  for (auto& x : d.k) x = n01(rng);
  for (auto& x : d.v) x = n01(rng);
  return d;
}

}  // namespace kvq::test
