#!/usr/bin/env bash
# ARM64: cross-compile kvq's tests with Debian's aarch64 toolchain and the arm64
# multiarch Highway, then run the tests under qemu-user on three emulated CPUs
# (docs/PLATFORMS.md):
#   neoverse-n1  ARMv8.2 NEON with the dot product (sdot), no SVE: every test
#                but the hidden ones and [examples] (a real-model llama run)
#   cortex-a72   ARMv8.0 NEON without the dot product: the kernel tests
#   max          SVE2, dot product, i8mm: the kernel tests (kvq dispatches NEON)
# KVQ_TEST_CPU_FEATURES makes the tests check that qemu really emulates those
# features. Run as root or with sudo on Debian bookworm (x86-64 host).
#   bash scripts/arm64.sh [build-dir]      (default build-arm64)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-arm64}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Another apt/dpkg may hold the lock (CI images, unattended upgrades): wait for it.
apt_get() {
  for _ in $(seq 60); do
    if $SUDO apt-get -o DPkg::Lock::Timeout=10 "$@"; then return 0; fi
    sleep 5
  done
  return 1
}
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
apt_get update -qq
# Eigen (Architecture: all) and Catch2 2.13 (Multi-Arch: foreign) headers are the
# host's packages; libc6/libstdc++6/libhwy1:arm64 are the runtime qemu loads.
apt_get install -y -qq --no-install-recommends \
  cmake ninja-build g++-aarch64-linux-gnu libhwy-dev:arm64 libstdc++6:arm64 qemu-user \
  libeigen3-dev catch2 >/dev/null

generator=(-G Ninja)  # as scripts/quickstart.sh
if [ -f "$build/CMakeCache.txt" ]; then generator=(); fi
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
  -DCMAKE_BUILD_TYPE=Release -DKVQ_BUILD_TOOLS=OFF -DKVQ_BUILD_BENCH=OFF -DKVQ_INSTALL=OFF
cmake --build "$build" -j"$(nproc)" --target kvq_tests
# Compile-only checks of the AArch64 target choice (tests/CMakeLists.txt, build.aarch64_*).
ctest --test-dir "$build" --output-on-failure -R '^build\.'

# One emulated CPU: QEMU_CPU picks it, KVQ_TEST_CPU_FEATURES says what it must
# (and, with '-', must not) have. Catch2's filter selects the tests.
run() {
  local cpu=$1 features=$2 filter=$3 t0=$SECONDS
  echo "-- qemu -cpu $cpu: $filter"
  QEMU_CPU=$cpu KVQ_TEST_CPU_FEATURES=$features \
    qemu-aarch64 "$build/tests/kvq_tests" "$filter"
  echo "-- qemu -cpu $cpu took $((SECONDS - t0)) s"
}
# Hidden tests ([exhaustive], [soak]) and the real-model llama runs ([examples])
# stay out: qemu runs them ~10-50x slower than native.
# qemu-user emulates one thread per process: two lanes of runs side by side keep
# both cores busy (the suite alone took 227 s on one). Each lane logs to a file,
# printed when it ends; the script fails if either lane does.
lane_cache() {
  run neoverse-n1 "asimd asimddp -sve" "[cache]"
  run cortex-a72 "asimd -asimddp -sve" "[kernels]"
}
lane_rest() {
  run neoverse-n1 "asimd asimddp -sve" "~[.]~[examples]~[cache]"
  run max "asimd asimddp sve sve2" "[kernels]"
}
logs=$(mktemp -d)
lane_cache > "$logs/cache.log" 2>&1 & pid_cache=$!
lane_rest > "$logs/rest.log" 2>&1 & pid_rest=$!
status=0
wait "$pid_cache" || status=1
wait "$pid_rest" || status=1
cat "$logs/cache.log" "$logs/rest.log"
rm -rf "$logs"
exit "$status"
