// Which kernels run: the library reports the targets it compiled and the one
// it chose, and the choice is the best compiled target the CPU supports.
#include "kvq_test.hpp"
#include "support/targets.hpp"

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
  CHECK((compiled & HWY_AVX3_DL) != 0);  // the int8 scores' VNNI target (entry_points.hpp)
}
#endif

TEST_CASE("kernels dispatch: int8_dot_path names each target's integer dot product", "[kernels][int8]") {
  const auto ran = kvq::test::for_each_target([] {
    const std::string target = kvq::kernels::target_name(), path = kvq::kernels::int8_dot_path();
    INFO("target " << target << ": int8 dot path " << path);
    if (target == "AVX3_DL") {
      CHECK(path == "vnni");
    } else if (target == "AVX3" || target == "AVX2" || target == "SSE4" || target == "SSSE3") {
      CHECK(path == "maddubs");
    } else if (target == "NEON") {
#if HWY_ARCH_ARM_A64 && defined(__linux__)
      CHECK(path == (kvq::test::arm_cpu_features().count("asimddp") ? "sdot" : "neon-widening"));
#else
      CHECK((path == "sdot" || path == "neon-widening"));
#endif
    } else if (target == "SCALAR") {
      CHECK(path == "scalar");
    } else {
      CHECK(path == "widening");
    }
  });
  kvq::test::require_targets_exercised(ran);
}

#if HWY_ARCH_ARM_A64 && defined(__linux__)
// kvq compiles no SVE target (kernels/definitions.hpp) and Highway nothing below
// the NEON baseline: NEON on every CPU. scripts/arm64.sh runs this under qemu on
// a NEON-only CPU, one with the dot product and an SVE2 one.
TEST_CASE("kernels dispatch: AArch64 compiles and runs NEON, SVE2 CPUs included", "[kernels][arm]") {
  kvq::test::require_expected_cpu_features();  // the emulated CPU is the one the run asked for
  const auto features = kvq::test::arm_cpu_features();
  REQUIRE(features.count("asimd") == 1);
  std::string names;
  for (const auto& f : features) names += " " + f;
  WARN("kernels: " << kvq::kernels::target_name() << ", int8 dot " << kvq::kernels::int8_dot_path() << "; CPU:" << names);
  hwy::SetSupportedTargetsForTest(0);
  CHECK(kvq::kernels::compiled_targets() == HWY_NEON);
  CHECK(std::string(kvq::kernels::target_name()) == "NEON");
}
#endif
