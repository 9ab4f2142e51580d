// Conan test_package: a q4_0 round trip through <kvq/kvq.hpp>, checked against q4_0's error bound
// (every value within amax/8 of its block, plus fp16 rounding of the scale).
#include <kvq/kvq.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <vector>

int main() {
  constexpr std::size_t head_dim = 64;
  const kvq::Q4_0 codec(head_dim);
  std::vector<float> x(head_dim), y(head_dim);
  for (std::size_t i = 0; i < head_dim; ++i) x[i] = std::cos(0.21f * static_cast<float>(i)) * 3.0f;
  std::vector<std::byte> tile(codec.bytes_per_tile());
  codec.encode_tile(x.data(), tile.data());
  codec.decode_tile(tile.data(), y.data());

  int failures = 0;
  for (std::size_t b = 0; b < head_dim; b += 32) {
    float amax = 0.0f;
    for (std::size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    for (std::size_t j = b; j < b + 32; ++j)
      if (!(std::fabs(x[j] - y[j]) <= amax / 8.0f * 1.01f + 1e-6f)) ++failures;
  }
  std::printf("kvq %s: q4_0 round trip of %zu values, %d out of bound\n", KVQ_VERSION_STRING, head_dim,
              failures);
  return failures == 0 ? 0 : 1;
}
