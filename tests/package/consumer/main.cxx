// kvq package consumer: encodes one row with q4_0 through the public umbrella header, decodes it,
// and fails unless every value is within q4_0's error bound; then attends a small q8_0 Cache and
// fails unless the output is within q8_0's error of exact attention computed here in double.
// Built out of tree by tests/package/CMakeLists.txt, once per way of consuming kvq and per mode
// (header-only kvq::kvq; kvq::kernels, where this TU compiles with KVQ_EXTERN_KERNELS). (.cxx,
// not .cpp: tests/ globs *.cpp into kvq_tests.)
#include <kvq/kvq.hpp>
#include <kvq/cache/cache.hpp>

// kvq::kernels must switch the consumer to declarations only (no Highway parsed), kvq::kvq not.
#if defined(KVQ_CONSUMER_EXPECT_EXTERN) != defined(KVQ_EXTERN_KERNELS)
#error "the package link did not give the expected kernel mode (KVQ_EXTERN_KERNELS)"
#endif
#if defined(KVQ_EXTERN_KERNELS) && defined(HWY_HIGHWAY_INCLUDED)
#error "KVQ_EXTERN_KERNELS: <kvq/kvq.hpp> must not compile Highway kernels"
#endif

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

  // A Cache the way an engine uses it: append tokens, attend one query per head (GQA 2).
  {
    constexpr std::size_t n_tok = 300, n_kv = 2, n_q = 4;
    kvq::Cache cache(kvq::ModelShape::dense(1, n_q, n_kv, head_dim, 1024), kvq::CacheSpec::parse("k=q8_0,v=q8_0"));
    std::vector<float> k(n_tok * n_kv * head_dim), v(k.size()), q(n_q * head_dim), out(q.size());
    for (std::size_t i = 0; i < k.size(); ++i) {
      k[i] = std::sin(0.013f * static_cast<float>(i * 7 % 1009));
      v[i] = std::cos(0.029f * static_cast<float>(i * 5 % 997));
    }
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.05f * static_cast<float>(i));
    cache.append(0, n_tok, k.data(), v.data());
    cache.attend(0, q.data(), out.data());
    double err = 0.0, ref = 0.0;
    for (std::size_t h = 0; h < n_q; ++h) {
      const std::size_t kv = h / (n_q / n_kv);
      std::vector<double> s(n_tok);
      double mx = -1e300, sum = 0.0;
      for (std::size_t t = 0; t < n_tok; ++t) {
        double dot = 0.0;
        for (std::size_t j = 0; j < head_dim; ++j) dot += double(q[h * head_dim + j]) * k[(t * n_kv + kv) * head_dim + j];
        s[t] = dot / std::sqrt(double(head_dim));
        mx = std::max(mx, s[t]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (std::size_t j = 0; j < head_dim; ++j) {
        double o = 0.0;
        for (std::size_t t = 0; t < n_tok; ++t) o += s[t] / sum * v[(t * n_kv + kv) * head_dim + j];
        err += (o - out[h * head_dim + j]) * (o - out[h * head_dim + j]);
        ref += o * o;
      }
    }
    const double rel = std::sqrt(err / ref);
    std::printf("kvq %s cache attend (%s kernels): relative error %.5f vs exact\n", KVQ_VERSION_STRING,
                kvq::kernels::target_name(), rel);
    if (!(rel < 0.02)) {  // q8_0: ~0.4% per value
      std::printf("cache attention error %g too large\n", rel);
      ++failures;
    }
  }

  std::printf("kvq %s q4_0 round trip: relative RMS error %.4f, %d failure(s)\n", KVQ_VERSION_STRING,
              rel_rms, failures);
  return failures == 0 ? 0 : 1;
}
