// Compiled (syntax only) by the build.static_dispatch_* tests: a consumer TU
// with KVQ_STATIC_DISPATCH_ONLY. On the x86-64 baseline it must fail with
// kvq's message naming -march flags; with -march=x86-64-v2 it must compile.
// Also compiled by the build.aarch64_* tests (SVE targets refused, +sve flags
// still compile the NEON kernels).
#include <kvq/kvq.hpp>

int main() { return kvq::kernels::target_name()[0] == 0; }
