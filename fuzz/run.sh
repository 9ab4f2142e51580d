#!/usr/bin/env bash
# Runs every kvq fuzz target for a bounded time on a copy of its seed corpus.
# Usage: fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET]   (default 30)
# Exit status is non-zero if any target finds a crash, a sanitizer report or an
# oracle violation; the reproducer is left in BUILD_DIR/fuzz/artifacts/.
set -euo pipefail
build="$1"
secs="${2:-30}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$build/fuzz/work"
artifacts="$build/fuzz/artifacts"
mkdir -p "$work" "$artifacts"
status=0
for target in codec_decode codec_encode cli_decode npy_reader gguf_reader make_codec snapshot_restore cache_pool; do
  rm -rf "$work/$target" && mkdir -p "$work/$target"
  cp "$here/corpus/$target/"* "$work/$target/"
  log="$build/fuzz/$target.log"
  # The file readers and snapshot restore must bound their allocations by the input size: tight limits there.
  limits="-rss_limit_mb=2048"
  case $target in npy_reader|gguf_reader|snapshot_restore) limits="-rss_limit_mb=512 -malloc_limit_mb=256" ;; esac
  if "$build/fuzz/kvq_fuzz_$target" -max_total_time="$secs" $limits \
       -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
       "$work/$target" >"$log" 2>&1; then
    echo "fuzz $target: ok, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') execs in ${secs} s"
  else
    echo "fuzz $target: FAILED (log: $log)"
    tail -40 "$log"
    status=1
  fi
done
exit $status
