// Single-core read bandwidth of this machine, the yardstick of the kernel
// benchmarks: decode attention is memory bound, so a kernel is judged by the
// fraction of this figure it reaches reading compressed rows.
#pragma once

namespace kvq::bench {
// Bytes per second one thread reads when summing a 512 MiB float buffer with
// the best SIMD target, best of several passes, timed in thread CPU time (the
// machine is shared; CPU time excludes time the thread was descheduled).
// Measured once per process.
double read_bandwidth();
// Single-core f32 FMA peak (flop/s, an FMA counted as 2) of the same target:
// 12 independent register FMA chains, best of several passes, thread CPU time.
double fma_peak();
// Target the probe ran on.
const char* read_bandwidth_target();
}  // namespace kvq::bench
