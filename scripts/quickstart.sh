#!/usr/bin/env bash
# Quick start, step 1 of 2 (README): install kvq's dependencies from Debian,
# configure and build everything (library, tests, tools, benchmarks), run the demo.
# Run as root or with sudo on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git python3 python3-numpy \
  libhwy-dev libeigen3-dev catch2 libbenchmark-dev clang libclang-rt-14-dev >/dev/null

# Ninja, because it compiles a target's objects while the libraries it links are still
# building (make waits for kvq::kernels before starting any test TU). An existing build
# directory keeps the generator it was made with.
generator=(-G Ninja)
if [ -f build/CMakeCache.txt ]; then generator=(); fi
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/examples/kvq_demo
