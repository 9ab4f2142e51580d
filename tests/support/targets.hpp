// Runs kernel checks once per SIMD target, for the kernel tests: each target
// the kernels library (kvq::kernels) compiled and this CPU runs, forced in
// turn through Highway's global target choice, which the library shares.
#pragma once

#include "kvq_test.hpp"

#include <kvq/kernels/dispatch.hpp>

#include <hwy/targets.h>

#include <cstdint>
#include <set>
#include <string>

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
  REQUIRE((ran.count("EMU128") + ran.count("SCALAR")) >= 1);
#if HWY_ARCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) REQUIRE(ran.count("SSE4") == 1);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) REQUIRE(ran.count("AVX2") == 1);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    REQUIRE(ran.count("AVX3") == 1);
#endif
}

}  // namespace kvq::test
