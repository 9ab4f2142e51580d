// kvq package consumer: encodes one row with q4_0 through the public umbrella header, decodes it,
// and fails unless every value is within q4_0's error bound. Built out of tree by
// tests/package/CMakeLists.txt, once per way of consuming kvq. (.cxx, not .cpp: tests/ globs *.cpp
// into kvq_tests.)
#include <kvq/kvq.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string_view>
#include <vector>

int main() {
  int failures = 0;

#ifdef KVQ_EXPECTED_VERSION
  // The version the build system reported (package version file, pkg-config) must be the
  // header's: version.hpp is the single source of truth.
  if (std::string_view(KVQ_VERSION_STRING) != KVQ_EXPECTED_VERSION) {
    std::printf("version mismatch: header %s, package %s\n", KVQ_VERSION_STRING, KVQ_EXPECTED_VERSION);
    ++failures;
  }
#endif

  constexpr std::size_t head_dim = 128;
  const kvq::Q4_0 codec(head_dim);
  if (codec.bytes_per_tile() != head_dim / 32 * 18) {  // ggml q4_0: fp16 scale + 16 bytes per 32 values
    std::printf("q4_0 bytes_per_tile %zu, expected %zu\n", codec.bytes_per_tile(), head_dim / 32 * 18);
    ++failures;
  }

  std::vector<float> x(head_dim);
  for (std::size_t i = 0; i < head_dim; ++i)
    x[i] = std::sin(0.37f * static_cast<float>(i)) * (1.0f + 0.5f * static_cast<float>(i % 7));
  std::vector<std::byte> tile(codec.bytes_per_tile());
  codec.encode_tile(x.data(), tile.data());
  std::vector<float> y(head_dim, 0.0f);
  codec.decode_tile(tile.data(), y.data());

  // q4_0 scale per 32-value block: d = amax/8. Rounding costs at most d/2 and the one clamped
  // level (+8 -> +7) at most d; d itself is stored as fp16 (relative error 2^-11, times |code| <= 8).
  double sq_err = 0.0, sq_x = 0.0;
  for (std::size_t b = 0; b < head_dim; b += 32) {
    float amax = 0.0f;
    for (std::size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float bound = amax / 8.0f * 1.01f + 1e-6f;
    for (std::size_t j = b; j < b + 32; ++j) {
      const float err = std::fabs(x[j] - y[j]);
      if (!(err <= bound)) {
        std::printf("value %zu: x=%g decoded=%g, error %g > bound %g\n", j, x[j], y[j], err, bound);
        ++failures;
      }
      sq_err += static_cast<double>(err) * err;
      sq_x += static_cast<double>(x[j]) * x[j];
    }
  }
  const double rel_rms = std::sqrt(sq_err / sq_x);
  if (!(rel_rms < 0.12)) {  // 4-bit uniform on this signal: about 0.06
    std::printf("relative RMS error %g too large\n", rel_rms);
    ++failures;
  }

  std::printf("kvq %s q4_0 round trip: relative RMS error %.4f, %d failure(s)\n", KVQ_VERSION_STRING,
              rel_rms, failures);
  return failures == 0 ? 0 : 1;
}
