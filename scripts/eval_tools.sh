# Sourced by the evaluation scripts that run both kvq-ppl and the kvq tool (pareto.sh,
# calibrate_check.sh): sets ROOT (the checkout), BUILD (default $ROOT/build), PPL and KVQ (the
# two programs), and stops, naming the build command, when either is not built.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PPL=$BUILD/examples/llama/kvq-ppl
KVQ=$BUILD/tools/kvq/kvq
for exe in "$PPL" "$KVQ"; do
  [[ -x $exe ]] || { echo "$(basename "$0"): $exe not built (cmake --build $BUILD --target kvq-ppl kvq_cli)" >&2; exit 1; }
done
