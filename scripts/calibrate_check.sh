#!/usr/bin/env bash
# scripts/calibrate_check.sh: the "Calibrated specs" table of docs/QUALITY.md -- `kvq calibrate`'s
# specs against the best uniform and the best boundary=2+2 spec within the same budget, on
# key-token perplexity (kvq-ppl --key-tokens) and on the retrieval probe (kvq eval --retrieval).
#
# 1. Sensitivity, two sources: the Q/K/V dumps (`kvq calibrate`, metrics: attention-output
#    squared relative error "out" and attention KL "kl") and the GGUF model (`kvq-ppl
#    --calibrate`, NLL on the first NLL_CTX bytes of WikiText-2 test).
# 2. For each source, `kvq calibrate` prints the calibrated spec and, under the same additive
#    model, the best uniform and the best boundary=2+2 spec within BITS bits/value at 32K
#    tokens (priced with Llama-3.2-3B's heads and head_dim on wt2-byte-a's 8 layers).
# 3. Every distinct spec, and FP32, through kvq-ppl (WINDOWS x 4096 bytes, decode prefill,
#    decoded readout, key tokens as in scripts/pareto.sh) and one `kvq eval --retrieval` run.
# EXTRA: further specs (space-separated) measured beside them as "reference" rows, e.g. the best
# tiered spec of the retrieval table (tiers are outside calibrate's search).
# Results are cached in $OUT (delete it to re-run). Markdown on stdout, progress on stderr.
#
#   BITS=3.0 scripts/calibrate_check.sh > calibrated.md
set -euo pipefail
source "$(dirname "$0")/eval_tools.sh"  # ROOT, BUILD, PPL, KVQ; result_of, field
BITS=${BITS:-3.0}
WINDOW=${WINDOW:-128}
SINKS=${SINKS:-4}
NLL_CTX=${NLL_CTX:-2048}
WINDOWS=${WINDOWS:-3}
STRIDE=${STRIDE:-16}
METRICS=${METRICS:-out kl}  # dump sensitivity metrics (kvq calibrate --metric)
EXTRA=${EXTRA:-k=turbo4,v=turbo2,window=128,sinks=4,tier=16384:turbo3/turbo2}
OUT=${OUT:-$BUILD/calibrate-b$BITS-w$WINDOW-s$SINKS}
mkdir -p "$OUT"
t_start=$SECONDS
budget=(--bits "$BITS" --context 32768 --price-model llama-3.2-3b)

for m in $METRICS; do
  if [[ ! -s $OUT/sens-dumps-$m.tsv ]]; then
    echo "calibrate_check.sh: dump sensitivity, metric $m" >&2
    t0=$SECONDS
    "$KVQ" calibrate "${budget[@]}" --window "$WINDOW" --sinks "$SINKS" --stride "$STRIDE" --metric "$m" \
      --out "$OUT/sens-dumps-$m.tsv" > "$OUT/calibrate-dumps-$m.txt"
    echo "dump sensitivity ($m): $((SECONDS - t0)) s wall" > "$OUT/sens-dumps-$m.time"
  fi
done
if [[ ! -s $OUT/sens-nll.tsv ]]; then
  echo "calibrate_check.sh: NLL sensitivity (kvq-ppl --calibrate, $NLL_CTX bytes)" >&2
  t0=$SECONDS
  "$PPL" --calibrate "$OUT/sens-nll.tsv.tmp" --ctx "$NLL_CTX" --window "$WINDOW" --sinks "$SINKS" > "$OUT/ppl-calibrate.txt"
  echo "NLL sensitivity: $((SECONDS - t0)) s wall" > "$OUT/sens-nll.time"
  mv "$OUT/sens-nll.tsv.tmp" "$OUT/sens-nll.tsv"
fi
for m in $METRICS; do "$KVQ" calibrate "${budget[@]}" --sensitivity "$OUT/sens-dumps-$m.tsv" > "$OUT/calibrate-dumps-$m.txt"; done
"$KVQ" calibrate "${budget[@]}" --sensitivity "$OUT/sens-nll.tsv" > "$OUT/calibrate-nll.txt"

# label|spec rows of the candidate tables.
candidates() {  # file source
  sed -n 's/^| \(calibrated\|best uniform\|best boundary=2+2\) | `\([^`]*\)` .*/\1|\2/p' "$1" | sed "s/^/$2 /"
}
mapfile -t ROWS < <(for m in $METRICS; do candidates "$OUT/calibrate-dumps-$m.txt" "dumps-$m"; done
  candidates "$OUT/calibrate-nll.txt" NLL
  for e in $EXTRA; do echo "- reference|$e"; done)
SPECS=("k=f32,v=f32")
for r in "${ROWS[@]}"; do
  s=${r#*|}
  [[ " ${SPECS[*]} " == *" $s "* ]] || SPECS+=("$s")
done

KEYS=$OUT/key-tokens.txt
for s in "${SPECS[@]}"; do result_of "$s" > /dev/null; done
base_nll=$(field nll "$(result_of k=f32,v=f32)")
printf '%s\n' "${SPECS[@]}" > "$OUT/specs.txt"
if [[ ! -s $OUT/retrieval.tsv ]] || ! cmp -s "$OUT/specs.txt" "$OUT/retrieval.specs"; then
  echo "calibrate_check.sh: kvq eval --retrieval (${#SPECS[@]} specs)" >&2
  "$KVQ" eval --retrieval --out "$OUT/retrieval.tsv.tmp" "${SPECS[@]}" > "$OUT/retrieval.txt"
  mv "$OUT/retrieval.tsv.tmp" "$OUT/retrieval.tsv"
  cp "$OUT/specs.txt" "$OUT/retrieval.specs"
fi

echo "Budget $BITS bits/value at 32K tokens (Llama-3.2-3B heads and head_dim on 8 layers), window $WINDOW, sinks $SINKS."
echo "Key tokens: kvq-ppl, $WINDOWS x 4096 bytes of WikiText-2 test. Needle mass: kvq eval --retrieval, exact mass 0.6, needle mass / exact, mean (10th percentile) over 128 probes per age bucket."
echo
age_header "$OUT/retrieval.tsv" sensitivity candidate spec "bits/value" "key-token change vs FP32 (± 1 s.e.)" \
  "all-token change"
ages=$(probe_ages "$OUT/retrieval.tsv")
for r in "${ROWS[@]}"; do
  src=${r%% *} rest=${r#* } label=${rest%%|*} spec=${r#*|}
  res=$(result_of "$spec")
  kd=$(field key_delta "$res") kse=$(field key_delta_se "$res") d=$(awk -v a="$(field nll "$res")" -v b="$base_nll" 'BEGIN {print a - b}')
  bits=$("$KVQ" plan --layers 8 --q-heads 24 --kv-heads 8 --head-dim 128 --context 32768 --spec "$spec" | awk 'NR == 3 {print $5}')
  printf '| %s | %s | `%s` | %s | %+.2f%% ± %.2f%% | %+.3f%% |' "$src" "$label" "$spec" "$bits" \
    "$(awk -v x="$kd" 'BEGIN {print 100 * (exp(x) - 1)}')" "$(awk -v x="$kse" 'BEGIN {print 100 * x}')" \
    "$(awk -v x="$d" 'BEGIN {print 100 * (exp(x) - 1)}')"
  for a in $ages; do
    printf ' %s |' "$(awk -F'\t' -v s="$spec" -v a="$a" '$1 == s && $6 == "all" && $3 == 0.6 && $4 "-" $5 - 1 == a {printf "%.3f (%.2f)", $8, $9}' "$OUT/retrieval.tsv")"
  done
  printf '\n'
done
echo
echo "wall time $((SECONDS - t_start)) s (results cached in $OUT)"
