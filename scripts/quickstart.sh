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
  build-essential cmake pkg-config git python3 python3-numpy \
  libhwy-dev libeigen3-dev catch2 libbenchmark-dev clang libclang-rt-14-dev >/dev/null

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/examples/kvq_demo
