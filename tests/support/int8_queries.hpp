// Queries for the int8-query score tests: the reference quantization of a
// query's blocks, and queries with outliers, zero blocks and (optionally)
// non-finite values.
#pragma once

#include "support/random_vector.hpp"

#include <kvq/core/rng.hpp>
#include <kvq/reference/int8_query.hpp>

#include <algorithm>
#include <limits>
#include <vector>

namespace kvq::test {

inline std::vector<kvq::reference::Int8QueryBlock> reference_blocks(const float* q, std::size_t hd) {
  std::vector<kvq::reference::Int8QueryBlock> r(hd / kvq::reference::kBlockValues);
  for (std::size_t b = 0; b < r.size(); ++b)
    r[b] = kvq::reference::quantize_query_block(q + b * kvq::reference::kBlockValues);
  return r;
}

// n queries of hd values at q + i * stride (the buffer has 8 floats to spare).
inline std::vector<float> int8_test_queries(kvq::Rng& rng, std::size_t n, std::size_t stride, std::size_t hd,
                                            bool hostile) {
  std::vector<float> q = random_vector(rng, n * stride + 8);
  for (std::size_t i = 0; i < n; ++i) {
    float* qi = q.data() + i * stride;
    qi[rng.next_u64() % hd] *= 20.0f;  // an outlier channel
    if (hd >= 64 && i % 3 == 1) std::fill(qi + 32, qi + 64, 0.0f);
    if (hostile && i % 4 == 2) qi[rng.next_u64() % hd] = std::numeric_limits<float>::quiet_NaN();
    if (hostile && i % 4 == 3) qi[rng.next_u64() % hd] = -std::numeric_limits<float>::infinity();
  }
  return q;
}

}  // namespace kvq::test
