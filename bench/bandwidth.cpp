// The read-bandwidth probe behind bench/bandwidth.hpp: a Highway sum with
// four independent accumulators per iteration (so the adds never limit it),
// compiled for every target in this TU alone (one foreach_target.h per TU).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bandwidth.cpp"
#include <hwy/foreach_target.h>
#include <hwy/highway.h>

#include <cstddef>

HWY_BEFORE_NAMESPACE();
namespace kvq::bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline float SumFloats(const float* HWY_RESTRICT p, std::size_t n) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    a0 = hn::Add(a0, hn::LoadU(d, p + i));
    a1 = hn::Add(a1, hn::LoadU(d, p + i + N));
    a2 = hn::Add(a2, hn::LoadU(d, p + i + 2 * N));
    a3 = hn::Add(a3, hn::LoadU(d, p + i + 3 * N));
  }
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) s += p[i];
  return s;
}
inline const char* ProbeTarget() { return hwy::TargetName(HWY_TARGET); }

// `iters` x 12 independent vector FMA chains (more than FMA latency x ports
// on any x86 core), in registers: the single-core f32 FMA peak.
inline float FmaChains(std::size_t iters, float seed) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999999f), c = hn::Set(d, 1e-7f);
  // Distinct starting values: identical chains would be merged into one by the compiler.
  auto a0 = hn::Set(d, seed), a1 = hn::Set(d, seed + 1), a2 = hn::Set(d, seed + 2), a3 = hn::Set(d, seed + 3),
       a4 = hn::Set(d, seed + 4), a5 = hn::Set(d, seed + 5), a6 = hn::Set(d, seed + 6), a7 = hn::Set(d, seed + 7),
       a8 = hn::Set(d, seed + 8), a9 = hn::Set(d, seed + 9), a10 = hn::Set(d, seed + 10), a11 = hn::Set(d, seed + 11);
  for (std::size_t i = 0; i < iters; ++i) {
    a0 = hn::MulAdd(a0, m, c); a1 = hn::MulAdd(a1, m, c); a2 = hn::MulAdd(a2, m, c); a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c); a5 = hn::MulAdd(a5, m, c); a6 = hn::MulAdd(a6, m, c); a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c); a9 = hn::MulAdd(a9, m, c); a10 = hn::MulAdd(a10, m, c); a11 = hn::MulAdd(a11, m, c);
  }
  const auto s = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(s, hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)))));
}
inline std::size_t FloatLanes() { return hn::Lanes(hn::ScalableTag<float>()); }

}  // namespace HWY_NAMESPACE
}  // namespace kvq::bench
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "bandwidth.hpp"

#include <time.h>

#include <algorithm>
#include <vector>

namespace kvq::bench {
HWY_EXPORT(SumFloats);
HWY_EXPORT(ProbeTarget);
HWY_EXPORT(FmaChains);
HWY_EXPORT(FloatLanes);

namespace {
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
}  // namespace

double read_bandwidth() {
  static const double bw = [] {
    const std::size_t n = (std::size_t{512} << 20) / sizeof(float);
    std::vector<float> buf(n, 1.0f);  // written once: pages are faulted in before timing
    double best = 0;
    volatile float sink = 0;
    for (int pass = 0; pass < 7; ++pass) {
      const double t0 = thread_seconds();
      sink = sink + HWY_DYNAMIC_DISPATCH(SumFloats)(buf.data(), n);
      const double dt = thread_seconds() - t0;
      best = std::max(best, static_cast<double>(n * sizeof(float)) / dt);
    }
    return best;
  }();
  return bw;
}
double fma_peak() {
  static const double peak = [] {
    const std::size_t iters = std::size_t{1} << 24;
    const double flops = 2.0 * 12.0 * static_cast<double>(HWY_DYNAMIC_DISPATCH(FloatLanes)()) * iters;
    double best = 0;
    volatile float sink = 0;
    for (int pass = 0; pass < 5; ++pass) {
      const double t0 = thread_seconds();
      sink = sink + HWY_DYNAMIC_DISPATCH(FmaChains)(iters, 1.0f + sink);
      best = std::max(best, flops / (thread_seconds() - t0));
    }
    return best;
  }();
  return peak;
}
const char* read_bandwidth_target() { return HWY_DYNAMIC_DISPATCH(ProbeTarget)(); }
}  // namespace kvq::bench
#endif  // HWY_ONCE
