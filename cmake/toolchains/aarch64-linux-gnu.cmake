# Cross-compiling kvq for 64-bit Arm Linux on a Debian (bookworm) x86-64 host, with
# the tests run under qemu-user. Used by scripts/arm64.sh, which installs:
#   dpkg --add-architecture arm64
#   apt-get install g++-aarch64-linux-gnu libhwy-dev:arm64 libstdc++6:arm64 qemu-user
# Eigen (libeigen3-dev, Architecture: all) and Catch2 2.13's headers (catch2,
# Multi-Arch: foreign) are the host's packages: header-only, arch-independent.
# Catch2's prebuilt Catch2WithMain is x86 code, so tests/CMakeLists.txt compiles
# its own main when cross-compiling.
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#   QEMU_CPU=neoverse-n1 ctest --test-dir build-arm64     # NEON (+dotprod), no SVE
#   QEMU_CPU=max ctest --test-dir build-arm64             # SVE2 (qemu-user's default CPU)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Debian multiarch: arm64 libraries and their CMake packages live in
# /usr/lib/aarch64-linux-gnu (libhwy-dev:arm64 puts hwy-config.cmake in its cmake/
# directory), headers in /usr/include. Searching / with this library architecture
# finds the arm64 Highway, never the x86-64 one in /usr/lib/x86_64-linux-gnu.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# ctest (and Catch2's test discovery at build time) run aarch64 binaries through
# qemu-user, with the arm64 multiarch runtime (libc6:arm64, libstdc++6:arm64,
# libhwy1:arm64: /lib/ld-linux-aarch64.so.1 and /usr/lib/aarch64-linux-gnu) as
# the target's root. Not `-L /usr/aarch64-linux-gnu` (the cross toolchain's
# sysroot): under qemu 7.2 every std::thread creation hangs there. The CPU comes
# from QEMU_CPU (qemu-user's default, `max`, has SVE2), so one build is tested
# on several CPUs.
find_program(KVQ_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR ${KVQ_QEMU_AARCH64})
