// Per-target helper shared by all kernel families: which target this copy of
// the kernels was compiled for, so the dispatcher can report its choice.
#if defined(KVQ_KERNELS_TARGET_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_TARGET_INL_H_
#undef KVQ_KERNELS_TARGET_INL_H_
#else
#define KVQ_KERNELS_TARGET_INL_H_
#endif

#include <hwy/highway.h>

#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
inline const char* KernelTargetName() { return hwy::TargetName(HWY_TARGET); }
// The same in every copy: the targets this TU compiled (with
// HWY_COMPILE_ONLY_STATIC, the static target alone).
inline std::int64_t KernelCompiledTargets() { return HWY_TARGETS; }
}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_TARGET_INL_H_
