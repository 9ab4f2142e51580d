// Small numeric helpers shared by the rotation tests.
#pragma once

#include <kvq/core/rng.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace kvq::test {

// d standard-normal floats from kvq::Rng(seed).
inline std::vector<float> random_vector(std::size_t d, std::uint64_t seed) {
  kvq::Rng rng(seed);
  std::vector<float> v(d);
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// Euclidean norm, accumulated in double.
inline double norm(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s);
}

}  // namespace kvq::test
