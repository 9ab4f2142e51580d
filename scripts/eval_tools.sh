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

# result_of SPEC: kvq-ppl of SPEC over $WINDOWS x 4096 bytes of WikiText-2 test (decode prefill,
# --readout ${READOUT:-decoded}), key tokens from $KEYS (the first run, FP32, writes it), cached
# per spec in $OUT; prints the run's "result ..." line. field NAME LINE: one key=value of it.
result_of() {
  local spec=$1 file="$OUT/ppl-$(echo "$1" | md5sum | cut -c1-12).txt"
  if ! grep -q '^result ' "$file" 2>/dev/null; then
    echo "$(basename "$0"): kvq-ppl $spec" >&2
    "$PPL" --spec "$spec" --windows "$WINDOWS" --ctx 4096 --readout "${READOUT:-decoded}" --baseline skip \
      --key-tokens "$KEYS" > "$file.tmp"
    mv "$file.tmp" "$file"
  fi
  grep '^result ' "$file"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }
