// Which kernels run: the library reports the targets it compiled and the one
// it chose, and the choice is the best compiled target the CPU supports.
#include "kvq_test.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <hwy/targets.h>

#include <cstdint>
#include <string>

TEST_CASE("kernels dispatch: the chosen target is the best compiled one this CPU runs", "[kernels]") {
  hwy::SetSupportedTargetsForTest(0);
  const std::int64_t compiled = kvq::kernels::compiled_targets();
  const std::int64_t runnable = compiled & hwy::SupportedTargets();
  REQUIRE(runnable != 0);
  // Highway orders targets by bit: the lowest set bit is the best one.
  CHECK(std::string(kvq::kernels::target_name()) == hwy::TargetName(runnable & -runnable));
  // The portable fallback is always compiled (unless only the static target is).
  if ((compiled & (compiled - 1)) != 0) CHECK((compiled & (HWY_EMU128 | HWY_SCALAR)) != 0);
}

TEST_CASE("kernels dispatch: forcing a target switches every entry point", "[kernels]") {
  const std::int64_t runnable = kvq::kernels::compiled_targets() & hwy::SupportedTargets();
  for (std::int64_t left = runnable; left != 0; left &= left - 1) {
    const std::int64_t target = left & -left;
    hwy::SetSupportedTargetsForTest(target);
    CHECK(std::string(kvq::kernels::target_name()) == hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
  CHECK(std::string(kvq::kernels::target_name()) == hwy::TargetName(runnable & -runnable));
}

#if HWY_ARCH_X86
TEST_CASE("kernels dispatch: a release build compiles the x86 SIMD targets", "[kernels]") {
  const std::int64_t compiled = kvq::kernels::compiled_targets();
  CHECK((compiled & HWY_SSE4) != 0);
  CHECK((compiled & HWY_AVX2) != 0);
  CHECK((compiled & HWY_AVX3) != 0);
}
#endif
