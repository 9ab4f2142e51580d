// The one translation unit of kvq::kernels: kvq's SIMD kernels for every
// Highway target, compiled once for a whole program whose other TUs define
// KVQ_EXTERN_KERNELS (CMake's kvq::kernels target carries the definition).
#include <kvq/kernels/definitions.hpp>
