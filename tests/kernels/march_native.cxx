// Syntax check (the build.march_native test, with -march=native where
// the compiler accepts it): with Highway 1.0.3, an AVX-512 VNNI/VBMI2 machine's
// native flags make AVX3_DL the static target, which fails to compile unless
// HWY_WANT_AVX3_DL is defined; kvq/kernels/entry_points.hpp must take care of it.
#include <kvq/kvq.hpp>

float kvq_march_native_check(const float* q, const std::byte* rows, float* out) {
  kvq::kernels::scores(kvq::Q4_0(128), q, 1, 128, rows, 8, out, 8);
  return out[0];
}
