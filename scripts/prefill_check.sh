#!/usr/bin/env bash
# scripts/prefill_check.sh: the measurements behind the perplexity table's method choices
# (docs/QUALITY.md, "Perplexity: prefill semantics and readout"):
#  1. prefill semantics for one windowed configuration over one 4096-byte window: chunked
#     prefill (--prefill batch, chunk 64: a chunk's queries read the cache as it stands after the
#     whole chunk) against decode semantics (--prefill decode) at chunk 64 and at chunk 1;
#  2. the decoded readout (float mirror of the cache) against the Cache::attend kernel readout,
#     over the first 1024 bytes, for a few configurations.
# Prints markdown tables on stdout.
#
#   BUILD=build SPEC=k=q2_1,v=q2_1,window=128 scripts/prefill_check.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SPEC=${SPEC:-k=q2_1,v=q2_1,window=128}
PPL=$BUILD/examples/llama/kvq-ppl
[[ -x $PPL ]] || { echo "prefill_check.sh: $PPL not built" >&2; exit 1; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }
run() { "$PPL" "$@" 2>/dev/null | grep '^result '; }

echo "Prefill semantics, \`$SPEC\`, first 4096-byte window of WikiText-2 test:"
echo
echo "| prefill | chunk | readout | nats/byte | change vs FP32 | CPU s |"
echo "|---|---|---|---|---|---|"
for cfg in "batch 64 decoded" "decode 64 decoded" "decode 1 decoded" "batch 1 decoded"; do
  read -r prefill chunk readout <<< "$cfg"
  r=$(run --spec "$SPEC" --ctx 4096 --windows 1 --chunk "$chunk" --prefill "$prefill" --readout "$readout" --baseline run)
  printf '| %s | %s | %s | %s | %+.6f | %s |\n' "$prefill" "$chunk" "$readout" "$(field nll "$r")" "$(field delta "$r")" \
    "$(field cpu_s "$r")"
done

echo
echo "Readout agreement, first 1024 bytes (decode-mode prefill, chunk 64):"
echo
echo "| spec | kernel nats/byte | decoded nats/byte | difference |"
echo "|---|---|---|---|"
for spec in k=f32,v=f32 k=q8_0,v=q8_0 k=q4_0,v=q4_0 k=turbo4,v=turbo4,window=128 k=pc4,v=q4_1 k=q2_1,v=q2_1,window=128; do
  a=$(field nll "$(run --spec "$spec" --ctx 1024 --windows 1 --readout kernel --baseline skip)")
  b=$(field nll "$(run --spec "$spec" --ctx 1024 --windows 1 --readout decoded --baseline skip)")
  printf '| `%s` | %s | %s | %+.6f |\n' "$spec" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b - a }')"
done
