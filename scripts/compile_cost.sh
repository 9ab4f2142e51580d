#!/usr/bin/env bash
# What one engine TU costs to compile in each kernel mode (docs/PACKAGING.md): a TU that includes
# <kvq/kvq.hpp>, builds a Cache, appends and attends, compiled with g++ -O2 header-only, with
# -DKVQ_EXTERN_KERNELS, and the kernels TU itself; plus a TU with only <hwy/highway.h> for scale.
# Prints CPU seconds (user + sys: less sensitive to a loaded machine than wall time) and peak
# memory. Needs GNU time (Debian: apt-get install time).
#   bash scripts/compile_cost.sh [compiler]
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${1:-${CXX:-g++}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/engine.cpp" <<'CPP'
#include <kvq/kvq.hpp>
#include <kvq/cache/cache.hpp>
#include <cstdio>
#include <vector>
int main() {
  kvq::Cache cache(kvq::ModelShape::dense(2, 4, 2, 64, 4096), kvq::CacheSpec::parse("k=q4_0,v=q4_0,window=16"));
  std::vector<float> k(2 * 64, 0.5f), v(2 * 64, 0.25f), q(4 * 64, 0.1f), o(4 * 64);
  for (int t = 0; t < 100; ++t) { cache.append(0, k.data(), v.data()); cache.append(1, k.data(), v.data()); }
  cache.attend(0, q.data(), o.data());
  std::printf("%s %g\n", kvq::kernels::target_name(), o[0]);
}
CPP
echo '#include <kvq/kernels/definitions.hpp>' > "$tmp/kernels.cpp"
echo '#include <hwy/highway.h>
int main() { return 0; }' > "$tmp/hwy.cpp"
measure() {  # label, extra flags, source
  /usr/bin/time -f "%U %S %M" -o "$tmp/t" "$CXX" -std=c++20 -O2 -Iinclude $2 -c "$3" -o "$tmp/o.o"
  awk -v label="$1" '{ printf "| %-44s | %6.2f s | %5d MB |\n", label, $1 + $2, $3 / 1024 }' "$tmp/t"
}
echo "uptime: $(uptime)"
echo "| translation unit ($CXX -O2) | CPU time | peak memory |"
echo "|---|---|---|"
measure "<hwy/highway.h> only" "" "$tmp/hwy.cpp"
measure "engine TU, header-only" "" "$tmp/engine.cpp"
measure "engine TU, -DKVQ_EXTERN_KERNELS" "-DKVQ_EXTERN_KERNELS" "$tmp/engine.cpp"
measure "every kernel in one TU (definitions.hpp)" "-DKVQ_EXTERN_KERNELS" "$tmp/kernels.cpp"
for f in src/*.cpp; do measure "$f (kvq::kernels)" "-DKVQ_EXTERN_KERNELS" "$f"; done
