// Highway kernels of the exact formats (f32, f16): the recent window, the
// sinks and plain f16/f32 caches, through rows-inl.h's drivers like every
// compressed row format.
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The scalar oracle is
// kvq/cache/exact_codec.hpp: a row is head_dim little-endian f32 or IEEE fp16
// values. A "block" here is 16 values (one AVX-512 register), so the drivers
// serve any head_dim that is a multiple of 16; others take the scalar codec
// path. fp16 widening is F16C's vcvtph2ps on AVX2 and up; below that,
// kvq's scalar conversion per value (Highway 1.0.3's emulated one maps Inf and
// NaN to finite values, and the window must decode bit-exactly).

#include <kvq/core/half.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(KVQ_KERNELS_EXACT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_EXACT_INL_H_
#undef KVQ_KERNELS_EXACT_INL_H_
#else
#define KVQ_KERNELS_EXACT_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace exact {

using namespace row_kernels;  // DF, VF, kLanes, ...

struct Plain {
  static constexpr std::size_t kBlock = 16;
  static constexpr std::size_t kHeader = 0;
  static constexpr bool kRowScale = false;
};
static_assert(Plain::kBlock % kLanes == 0, "a block must be whole vectors");

struct F32 : Plain {
  static constexpr std::size_t kBytes = 64;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const DF df;
    KVQ_UNROLL
    for (std::size_t k = 0; k < kBlock / kLanes; ++k)
      x[k] = hn::LoadU(df, reinterpret_cast<const float*>(blk) + k * kLanes);
  }
};

struct F16 : Plain {
  static constexpr std::size_t kBytes = 32;
  static HWY_INLINE void Decode(const std::uint8_t* blk, VF* x) {
    const DF df;
#if HWY_ARCH_X86 && HWY_TARGET < HWY_SSE4 && !defined(HWY_DISABLE_F16C)
    const hn::Rebind<hwy::float16_t, DF> d16;
    KVQ_UNROLL
    for (std::size_t k = 0; k < kBlock / kLanes; ++k)
      x[k] = hn::PromoteTo(df, hn::LoadU(d16, reinterpret_cast<const hwy::float16_t*>(blk) + k * kLanes));
#else
    alignas(64) float v[kBlock];
    for (std::size_t i = 0; i < kBlock; ++i) v[i] = LoadHalfScalar(blk + 2 * i);
    KVQ_UNROLL
    for (std::size_t k = 0; k < kBlock / kLanes; ++k) x[k] = hn::Load(df, v + k * kLanes);
#endif
  }
};

}  // namespace exact

// Entry points (rows-inl.h's macro): ScoresF32, AccumulateF32, ScoresF16, AccumulateF16.
KVQ_ROW_KERNEL_ENTRY_POINTS(exact, F32)
KVQ_ROW_KERNEL_ENTRY_POINTS(exact, F16)

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_EXACT_INL_H_
