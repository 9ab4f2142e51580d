// Runs kernel checks once per SIMD target, for the kernel tests: each target
// the kernels library (kvq::kernels) compiled and this CPU runs, forced in
// turn through Highway's global target choice, which the library shares.
#pragma once

#include "kvq_test.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <hwy/targets.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

#if HWY_ARCH_ARM_A64 && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace kvq::test {

// Runs fn once per target the kernels were compiled for and this CPU
// supports, forcing dispatch to that target; returns the names of the targets run.
template <class Fn>
inline std::set<std::string> for_each_target(Fn&& fn) {
  // Undo the forced target even when a REQUIRE throws out of fn, or every
  // later test would run on that one target only.
  struct Reset {
    Reset() { hwy::SetSupportedTargetsForTest(0); }
    ~Reset() { hwy::SetSupportedTargetsForTest(0); }
  } reset;
  std::set<std::string> ran;
  const std::int64_t runnable = kvq::kernels::compiled_targets() & hwy::SupportedTargets();
  for (std::int64_t left = runnable; left != 0; left &= left - 1) {
    const std::int64_t target = left & -left;
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = hwy::TargetName(target);
    REQUIRE(std::string(kvq::kernels::target_name()) == name);  // dispatch really switched
    fn();
    ran.insert(name);
  }
  return ran;
}

// The targets this CPU must have exercised, from the CPU's own feature bits
// (not from Highway), so a short target list fails instead of passing quietly.
inline void require_targets_exercised(const std::set<std::string>& ran) {
  INFO("targets run: " << [&] {
    std::string s;
    for (const auto& t : ran) s += t + " ";
    return s;
  }());
#if HWY_ARCH_X86
  // The x86-64 baseline has no SIMD target: Highway compiles its scalar fallback.
  REQUIRE((ran.count("EMU128") + ran.count("SCALAR")) >= 1);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) REQUIRE(ran.count("SSE4") == 1);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) REQUIRE(ran.count("AVX2") == 1);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    REQUIRE(ran.count("AVX3") == 1);
  // Highway 1.0.3's AVX3_DL (kvq compiles it in dynamic builds: VNNI int8 scores).
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
      __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bitalg") &&
      __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("vaes") &&
      __builtin_cpu_supports("vpclmulqdq"))
    REQUIRE(ran.count("AVX3_DL") == 1);
#elif HWY_ARCH_ARM_A64
  // NEON is the AArch64 baseline, so Highway compiles nothing below it, and
  // kvq compiles no SVE target (kvq/kernels/definitions.hpp): exactly NEON, on
  // every CPU, SVE2 ones included.
  REQUIRE(ran == std::set<std::string>{"NEON"});
#endif
}

#if HWY_ARCH_ARM_A64 && defined(__linux__)
// The SIMD features the kernel reports for this CPU (under qemu-user: the
// emulated CPU, QEMU_CPU), by their /proc/cpuinfo names.
inline std::set<std::string> arm_cpu_features() {
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  std::set<std::string> f;
  if (hw & HWCAP_ASIMD) f.insert("asimd");
  if (hw & HWCAP_ASIMDHP) f.insert("asimdhp");
  if (hw & HWCAP_ASIMDDP) f.insert("asimddp");  // sdot/udot
  if (hw2 & HWCAP2_I8MM) f.insert("i8mm");
  if (hw & HWCAP_SVE) f.insert("sve");
  if (hw2 & HWCAP2_SVE2) f.insert("sve2");
  return f;
}

// KVQ_TEST_CPU_FEATURES="asimddp -sve" (scripts/arm64.sh sets it per emulated
// CPU): features this CPU must have, and with '-' must lack, so a run meant for
// an SVE2 or a NEON-only CPU fails if the emulator gave it another one.
inline void require_expected_cpu_features() {
  const auto have = arm_cpu_features();
  std::string names;
  for (const auto& f : have) names += f + " ";
  INFO("CPU features: " << names);
  const char* env = std::getenv("KVQ_TEST_CPU_FEATURES");
  std::istringstream want(env ? env : "");
  for (std::string f; want >> f;) {
    INFO("KVQ_TEST_CPU_FEATURES: " << f);
    if (f[0] == '-')
      CHECK(have.count(f.substr(1)) == 0);
    else
      CHECK(have.count(f) == 1);
  }
}
#endif

}  // namespace kvq::test
