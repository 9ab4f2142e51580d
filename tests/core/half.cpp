#include "kvq_test.hpp"

#include <kvq/core/half.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

// The hardware's own conversions, an independent reference: F16C on x86,
// FCVT on AArch64 (base ARMv8 floating point, through GCC's __fp16).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVQ_TEST_HAVE_HW_HALF 1
namespace {
constexpr const char* kHwHalf = "F16C";
__attribute__((target("f16c"))) float hw_half_to_float(std::uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) std::uint16_t hw_float_to_half(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
bool have_hw_half() { return __builtin_cpu_supports("f16c"); }
}  // namespace
#elif defined(__aarch64__)
#define KVQ_TEST_HAVE_HW_HALF 1
namespace {
constexpr const char* kHwHalf = "AArch64 FCVT";
float hw_half_to_float(std::uint16_t h) { return static_cast<float>(std::bit_cast<__fp16>(h)); }
std::uint16_t hw_float_to_half(float f) { return std::bit_cast<std::uint16_t>(static_cast<__fp16>(f)); }
bool have_hw_half() { return true; }
}  // namespace
#endif

namespace {
std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }

// Every float bit pattern with stride `step` (plus the patterns around every
// rounding boundary of half: the 13 low mantissa bits near 0x1000).
template <class F>
void for_float_patterns(std::uint64_t step, F&& f) {
  for (std::uint64_t x = 0; x < (1ull << 32); x += step) f(static_cast<std::uint32_t>(x));
  for (std::uint32_t top = 0; top < (1u << 19); top += 7)
    for (std::uint32_t low : {0x0FFFu, 0x1000u, 0x1001u, 0x1FFFu, 0x0001u})
      f((top << 13) | low);
}
}  // namespace

TEST_CASE("half: known values", "[core][half]") {
  CHECK(kvq::float_to_half_bits(0.0f) == 0x0000);
  CHECK(kvq::float_to_half_bits(-0.0f) == 0x8000);
  CHECK(kvq::float_to_half_bits(1.0f) == 0x3C00);
  CHECK(kvq::float_to_half_bits(-2.0f) == 0xC000);
  CHECK(kvq::float_to_half_bits(65504.0f) == 0x7BFF);
  CHECK(kvq::float_to_half_bits(65519.99f) == 0x7BFF);  // below the midpoint to 65536
  CHECK(kvq::float_to_half_bits(65520.0f) == 0x7C00);   // the midpoint rounds to even: Inf
  CHECK(kvq::float_to_half_bits(0x1.0p-24f) == 0x0001);  // smallest subnormal
  CHECK(kvq::float_to_half_bits(0x1.0p-25f) == 0x0000);  // tie rounds to even (zero)
  CHECK(kvq::float_to_half_bits(0x1.8p-25f) == 0x0001);
  CHECK(kvq::float_to_half_bits(INFINITY) == 0x7C00);
  CHECK(kvq::float_to_half_bits(-INFINITY) == 0xFC00);
  CHECK((kvq::float_to_half_bits(NAN) & 0x7E00) == 0x7E00);
  // 1 + 2^-11 is exactly halfway between 1 and the next half: ties to even (1.0).
  CHECK(kvq::float_to_half_bits(1.0f + 0x1.0p-11f) == 0x3C00);
  CHECK(kvq::float_to_half_bits(1.0f + 0x1.8p-10f) == 0x3C02);  // 1.5 ulp: tie, up to even
  CHECK(kvq::half_bits_to_float(0x3555) == 0.333251953125f);
  CHECK(kvq::half_bits_to_float(0x0001) == 0x1.0p-24f);
  CHECK(std::isnan(kvq::half_bits_to_float(0x7C01)));
}

TEST_CASE("half: every half survives a round trip through float", "[core][half]") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = kvq::half_bits_to_float(static_cast<std::uint16_t>(h));
    const std::uint16_t back = kvq::float_to_half_bits(f);
    if (std::isnan(f)) {
      REQUIRE((back & 0x7C00) == 0x7C00);
      REQUIRE((back & 0x3FF) == ((h & 0x3FF) | 0x200));  // payload kept, quieted
      REQUIRE((back & 0x8000) == (h & 0x8000));
    } else {
      REQUIRE(back == h);
    }
  }
}

#ifdef KVQ_TEST_HAVE_HW_HALF
TEST_CASE("half: identical to the hardware (F16C, AArch64 FCVT) for all 65,536 halves", "[core][half]") {
  INFO("hardware conversion: " << kHwHalf);
  if (!have_hw_half()) {
    WARN("CPU has no F16C: hardware comparison skipped");
    return;
  }
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    REQUIRE(bits_of(kvq::half_bits_to_float(hb)) == bits_of(hw_half_to_float(hb)));
  }
}

TEST_CASE("half: float -> half identical to the hardware on a sweep of float patterns", "[core][half]") {
  INFO("hardware conversion: " << kHwHalf);
  if (!have_hw_half()) {
    WARN("CPU has no F16C: hardware comparison skipped");
    return;
  }
  std::uint64_t mismatches = 0, checked = 0;
  for_float_patterns(251, [&](std::uint32_t u) {
    const float f = std::bit_cast<float>(u);
    ++checked;
    if (kvq::float_to_half_bits(f) != hw_float_to_half(f)) ++mismatches;
  });
  CHECK(checked > 17'000'000);
  CHECK(mismatches == 0);
}

// All 2^32 floats: ~10 s in a release build, so hidden; .ci/run runs it with "[exhaustive]".
TEST_CASE("half: float -> half identical to the hardware for every float", "[.][exhaustive][core][half]") {
  REQUIRE(have_hw_half());
  std::uint64_t mismatches = 0;
  for (std::uint64_t x = 0; x < (1ull << 32); ++x) {
    const float f = std::bit_cast<float>(static_cast<std::uint32_t>(x));
    mismatches += kvq::float_to_half_bits(f) != hw_float_to_half(f);
  }
  CHECK(mismatches == 0);
}
#endif

TEST_CASE("bfloat16: round to nearest even, NaN kept, subnormals kept", "[core][bfloat16]") {
  CHECK(kvq::float_to_bfloat16_bits(1.0f) == 0x3F80);
  CHECK(kvq::float_to_bfloat16_bits(-2.0f) == 0xC000);
  // 1 + 2^-8 is halfway between two bfloat16 values: ties to even (1.0).
  CHECK(kvq::float_to_bfloat16_bits(1.0f + 0x1.0p-8f) == 0x3F80);
  CHECK(kvq::float_to_bfloat16_bits(1.0f + 0x1.8p-7f) == 0x3F82);
  CHECK(kvq::float_to_bfloat16_bits(INFINITY) == 0x7F80);
  CHECK(kvq::float_to_bfloat16_bits(std::bit_cast<float>(0x7F7FFFFFu)) == 0x7F80);  // FLT_MAX overflows
  CHECK(kvq::float_to_bfloat16_bits(std::bit_cast<float>(0x00010000u)) == 0x0001);  // subnormal kept
  const std::uint16_t nan = kvq::float_to_bfloat16_bits(std::bit_cast<float>(0x7F800001u));
  CHECK(std::isnan(kvq::bfloat16_bits_to_float(nan)));
  // Every bfloat16 round-trips, and rounding matches a double-precision reference.
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = kvq::bfloat16_bits_to_float(static_cast<std::uint16_t>(b));
    if (!std::isnan(f)) REQUIRE(kvq::float_to_bfloat16_bits(f) == b);
  }
  for_float_patterns(65537, [](std::uint32_t u) {
    const float f = std::bit_cast<float>(u);
    if (!std::isfinite(f)) return;
    const float r = kvq::bfloat16_bits_to_float(kvq::float_to_bfloat16_bits(f));
    // The truncated value and the next bfloat16 away from zero bracket f; the
    // nearest wins, ties to even. Past the largest finite value the next one is
    // 2^128, which IEEE rounding treats as the overflow threshold (result Inf).
    const std::uint32_t lo = u & 0xFFFF0000u;
    const double a = std::bit_cast<float>(lo);
    const int exp = static_cast<int>((lo >> 23) & 0xFF);
    const double ulp = std::ldexp(1.0, (exp == 0 ? 1 : exp) - 127 - 7);
    const double b2 = a + (std::signbit(f) ? -ulp : ulp);
    const double dl = std::fabs(double(f) - a), dh = std::fabs(double(f) - b2);
    double expect = dl < dh ? a : dh < dl ? b2 : (((lo >> 16) & 1) ? b2 : a);
    if (std::fabs(expect) == 0x1.0p128) expect = std::copysign(INFINITY, expect);
    REQUIRE(double(r) == expect);
  });
}
