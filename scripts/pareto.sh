#!/usr/bin/env bash
# scripts/pareto.sh: the "Perplexity" table of docs/QUALITY.md -- wt2-byte-a on WikiText-2 test
# through a kvq::Cache of every configuration below, with the memory each would take for a
# Llama-3.2-3B-shaped model at 32K and 128K tokens, and which configurations are Pareto-optimal.
#
# Each configuration is one `kvq-ppl --spec ... --readout decoded --baseline skip` run over the
# same windows (decode-mode prefill: every query sees the cache as token-by-token generation
# would; decoded readout: attention over the cache's decoded current state, which agrees with the
# fused Cache::attend path to rounding and is ~10x faster than the scalar kernels); the FP32
# row is `--spec k=f32,v=f32 --baseline run`, which also checks that exact storage through the
# cache reproduces plain exact attention. Memory is `kvq plan --model llama-3.2-3b`.
# Key-token column (LongPPL): the change on the tokens whose exact NLL with the full window is
# lower than with only the last 256 bytes by more than KEY_MARGIN nats (kvq-ppl --key-tokens;
# the FP32 row measures them once into $OUT/key-tokens.txt, every other row reads that file).
# Results are cached per configuration in $OUT (delete it to re-run), so an interrupted run
# resumes where it stopped. Prints the markdown table on stdout, progress on stderr.
#
#   BUILD=build WINDOWS=2 CTX=4096 scripts/pareto.sh > pareto.md
#   MATCH='turbo2|q2_1' scripts/pareto.sh   # only specs matching the regex (and the FP32 row)
set -euo pipefail
source "$(dirname "$0")/eval_tools.sh"  # ROOT, BUILD, PPL, KVQ
WINDOWS=${WINDOWS:-2}
CTX=${CTX:-4096}
CHUNK=${CHUNK:-64}
OUT=${OUT:-$BUILD/pareto-w$WINDOWS-c$CTX}
KEY_MARGIN=${KEY_MARGIN:-0.5}  # nats: short-context NLL minus full-context NLL above this = key token
KEY_SHORT=${KEY_SHORT:-256}
KEYS=$OUT/key-tokens-s$KEY_SHORT.txt
NOISE=${NOISE:-0.0005}  # nats/byte: NLL differences below this are ties (docs/QUALITY.md, noise floor)
mkdir -p "$OUT"

# label|spec, most informative first (a partial run is still useful).
CONFIGS=(
  "FP32 (exact)|k=f32,v=f32"
  "q8_0|k=q8_0,v=q8_0"
  "turbo4|k=turbo4,v=turbo4"
  "turbo4 + recent 128|k=turbo4,v=turbo4,window=128"
  "q2_1|k=q2_1,v=q2_1"
  "q2_1 + recent 512|k=q2_1,v=q2_1,window=512"
  "K q8_0, V turbo2|k=q8_0,v=turbo2"
  "K q8_0, V turbo2, boundary V 2+2 q8_0|k=q8_0,v=turbo2,boundary=2+2:q8_0/q8_0"
  "K q8_0, V turbo3|k=q8_0,v=turbo3"
  "K pc4, V q4_1|k=pc4,v=q4_1"
  "q4_0|k=q4_0,v=q4_0"
  "q4_1|k=q4_1,v=q4_1"
  "q3_1|k=q3_1,v=q3_1"
  "turbo3|k=turbo3,v=turbo3"
  "turbo2|k=turbo2,v=turbo2"
  "turbo4 + recent 64|k=turbo4,v=turbo4,window=64"
  "turbo4 + recent 256|k=turbo4,v=turbo4,window=256"
  "q2_1 + recent 128|k=q2_1,v=q2_1,window=128"
  "K turbo4, V f16 (seed 001/002 setting)|k=turbo4,v=f16"
  "K turbo4 + recent 128, V f16|k=turbo4,v=f16,window=128"
  "K q2_1 + recent 512, V f16|k=q2_1,v=f16,window=512"
  # Around 3.0 and 2.25 bits/value at 32K on Llama-3.2-3B (kvq plan), as in the retrieval probe.
  "K turbo4, V turbo2|k=turbo4,v=turbo2"
  "K turbo3, V turbo2 + recent 256 + 4 sinks|k=turbo3,v=turbo2,window=256,sinks=4"
  "K turbo4, V turbo2 + 128 + 4 sinks, tier 8192 K turbo3|k=turbo4,v=turbo2,window=128,sinks=4,tier=8192:turbo3/turbo2"
  "K turbo4, V turbo2 + 128 + 4 sinks, tier 16384 K turbo3|k=turbo4,v=turbo2,window=128,sinks=4,tier=16384:turbo3/turbo2"
  "K turbo4, V turbo2, tier 16384 K turbo3|k=turbo4,v=turbo2,tier=16384:turbo3/turbo2"
  "turbo2 + recent 1024 + 4 sinks|k=turbo2,v=turbo2,window=1024,sinks=4"
  "turbo2 + recent 128 + 4 sinks|k=turbo2,v=turbo2,window=128,sinks=4"
  "turbo4/turbo3 + 128 + 4 sinks, tier 2048 turbo2|k=turbo4,v=turbo3,window=128,sinks=4,tier=2048:turbo2/turbo2"
  "K pc2, V turbo2|k=pc2,v=turbo2"
)
[[ -n ${ONLY:-} ]] && CONFIGS=("${CONFIGS[@]:0:$ONLY}")  # ONLY=N: the first N configurations
if [[ -n ${MATCH:-} ]]; then  # the FP32 row stays: it is the baseline and measures the key tokens
  picked=("${CONFIGS[0]}")
  for entry in "${CONFIGS[@]:1}"; do [[ ${entry#*|} =~ $MATCH ]] && picked+=("$entry"); done
  CONFIGS=("${picked[@]}")
fi
KM=$(printf '%.6f' "$KEY_MARGIN")

result_of() {  # spec -> cached "result ..." line (runs kvq-ppl if needed)
  local spec=$1 base=$2 file="$OUT/$(echo "$1" | tr ',=/+:' '_____').txt"
  if ! grep -q "^result .* key_margin=$KM " "$file" 2>/dev/null; then
    echo "pareto.sh: running $spec" >&2
    "$PPL" --spec "$spec" --windows "$WINDOWS" --ctx "$CTX" --chunk "$CHUNK" --readout decoded --baseline "$base" \
      --key-tokens "$KEYS" --key-margin "$KEY_MARGIN" --key-short "$KEY_SHORT" > "$file.tmp"
    mv "$file.tmp" "$file"
  fi
  grep '^result ' "$file"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }

rows=()
base_nll=""
for entry in "${CONFIGS[@]}"; do
  label=${entry%%|*} spec=${entry#*|}
  if [[ -z $base_nll ]]; then r=$(result_of "$spec" run); base_nll=$(field base_nll "$r"); else r=$(result_of "$spec" skip); fi
  nll=$(field nll "$r") kb=$(field k_bits "$r") vb=$(field v_bits "$r") tokens=$(field tokens "$r")
  kd=$(field key_delta "$r") kse=$(field key_delta_se "$r") keys=$(field key_tokens "$r") key_base=$(field key_base_nll "$r")
  plan=$("$KVQ" plan --model llama-3.2-3b --context 32768,131072 --spec "$spec")
  g32=$(awk '$2 == 32768 {print $4}' <<< "$plan") g128=$(awk '$2 == 131072 {print $4}' <<< "$plan")
  rows+=("$label|$spec|$nll|$kb|$vb|$g32|$g128|$kd|$kse")
done

echo "wt2-byte-a, WikiText-2 test, $WINDOWS window(s) of $CTX bytes ($tokens bytes predicted), chunk $CHUNK, decode-mode prefill."
echo "FP32 baseline $base_nll nats/byte. Memory: kvq plan --model llama-3.2-3b (28 layers, 8 KV heads, head_dim 128)."
echo
echo "Pareto: no other row is at most as large at 32K and at most $NOISE nats/byte worse, while smaller or more than $NOISE better."
echo "K/V bits/value: what the cache held after a $CTX-token window (exact window tokens at 32 bits)."
echo "Key tokens: $keys of $tokens bytes, whose exact NLL with the full window is lower than with only the last"
echo "$KEY_SHORT-$((KEY_SHORT + 63)) bytes by more than $KEY_MARGIN nats (FP32 NLL on them $key_base nats/byte)."
echo
echo "| configuration | spec | nats/byte | PPL (per byte) | change vs FP32 | key-token change vs FP32 (± 1 s.e.) | K bits/value | V bits/value | GiB at 32K | GiB at 128K | Pareto |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}" | awk -F'|' -v base="$base_nll" -v eps="$NOISE" '
  { label[NR]=$1; spec[NR]=$2; nll[NR]=$3; kb[NR]=$4; vb[NR]=$5; g32[NR]=$6; g128[NR]=$7; kd[NR]=$8; kse[NR]=$9; n=NR }
  END {
    for (i = 1; i <= n; i++) {
      # Pareto-optimal: no other configuration is at most as large at 32K and not worse beyond
      # the noise floor, while strictly smaller or better beyond the noise floor.
      opt = "yes"
      for (j = 1; j <= n; j++)
        if (j != i && g32[j] <= g32[i] && nll[j] <= nll[i] + eps && (g32[j] < g32[i] || nll[j] < nll[i] - eps)) opt = ""
      printf "| %s | `%s` | %.5f | %.4f | %+.2f%% | %+.2f%% ± %.2f%% | %.3f | %.3f | %.3f | %.3f | %s |\n", label[i], spec[i], nll[i],
             exp(nll[i]), 100 * (exp(nll[i] - base) - 1), 100 * (exp(kd[i]) - 1), 100 * kse[i], kb[i], vb[i], g32[i], g128[i], opt
    }
  }'
