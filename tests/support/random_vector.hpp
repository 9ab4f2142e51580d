// Small numeric helpers shared by the tests.
#pragma once

#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace kvq::test {

// n normal floats (mean 0, standard deviation sd) drawn from rng.
inline std::vector<float> random_vector(kvq::Rng& rng, std::size_t n, float sd = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = sd * static_cast<float>(rng.normal());
  return v;
}

// d normal floats from kvq::Rng(seed).
inline std::vector<float> random_vector(std::size_t d, std::uint64_t seed, float sd = 1.0f) {
  kvq::Rng rng(seed);
  return random_vector(rng, d, sd);
}

// Euclidean norm, accumulated in double.
inline double norm(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s);
}

}  // namespace kvq::test
