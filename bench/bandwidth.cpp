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
const char* read_bandwidth_target() { return HWY_DYNAMIC_DISPATCH(ProbeTarget)(); }
}  // namespace kvq::bench
#endif  // HWY_ONCE
