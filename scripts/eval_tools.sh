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

# probe_ages TSV: the age buckets (LO-HI) of a `kvq eval --retrieval --out` TSV, in order.
probe_ages() { awk -F'\t' 'NR > 1 && $6 == "all" && $3 == 0.6 {print $4 "-" $5 - 1}' "$1" | awk '!seen[$0]++' | tr '\n' ' '; }
# age_header TSV COLUMN...: a markdown table header, the given columns then one per age bucket.
age_header() {
  local tsv=$1 a
  shift
  printf '|'
  printf ' %s |' "$@"
  for a in $(probe_ages "$tsv"); do printf ' age %s |' "$a"; done
  printf '\n|'
  printf -- '---|%.0s' "$@"
  for a in $(probe_ages "$tsv"); do printf -- '---|'; done
  printf '\n'
}
