#!/usr/bin/env bash
# scripts/heavy_check.sh: attention-aware precision (heavy=N) against plain age tiers and
# windows at equal bytes -- the "Attention-aware precision" table of docs/QUALITY.md.
#
# Specs come in pairs priced alike at 32K tokens on the Llama-3.2-3B shape (`kvq plan`): the
# heavy-hitter spec spends its bytes on N exact tokens per KV head, its partner on a longer
# window or a later tier (docs/heavy-specs.txt, one spec per line). Each is measured by
#   1. the retrieval probe with mentions (kvq eval --retrieval --observe 16 --mention-age 48):
#      while the context is built, the real queries attend every 16th step and each probe's
#      query attends once when its needle is 48 tokens old -- a needle that was asked about
#      while recent, which is what heavy hitters keep;
#   2. the same probe without mentions (--observe 16 only): needles nobody looked at, which
#      heavy hitters cannot know about (what they cost when their bet is wrong);
#   3. key-token perplexity (kvq-ppl --readout kernel --key-tokens, WINDOWS x 4096 bytes,
#      decode-mode prefill: Cache::attend at every token, which is how heavy hitters are found).
# Results are cached in $OUT (delete it to re-run). Prints the markdown table on stdout.
#
#   BUILD=build WINDOWS=3 scripts/heavy_check.sh > heavy.md
set -euo pipefail
source "$(dirname "$0")/eval_tools.sh"  # ROOT, BUILD, PPL, KVQ; result_of, field, age_header
WINDOWS=${WINDOWS:-3}
OUT=${OUT:-$BUILD/heavy-check}
SPECS_FILE=${SPECS_FILE:-$ROOT/docs/heavy-specs.txt}
READOUT=kernel  # Cache::attend at every token: how heavy hitters are found
mkdir -p "$OUT"
mapfile -t SPECS < <(grep -v '^\s*$' "$SPECS_FILE")

probe() {  # name, extra flags...
  local name=$1
  shift
  if [[ ! -s $OUT/$name.tsv ]] || ! cmp -s "$SPECS_FILE" "$OUT/$name.specs"; then
    echo "heavy_check.sh: kvq eval --retrieval $* (${#SPECS[@]} specs)" >&2
    local t0=$SECONDS
    "$KVQ" eval --retrieval "$@" --out "$OUT/$name.tsv.tmp" "${SPECS[@]}" > "$OUT/$name.md"
    echo "$((SECONDS - t0))" > "$OUT/$name.time"
    mv "$OUT/$name.tsv.tmp" "$OUT/$name.tsv"
    cp "$SPECS_FILE" "$OUT/$name.specs"
  fi
}
probe mentioned --observe 16 --mention-age 48
probe observed --observe 16

KEYS=$OUT/key-tokens.txt
t0=$SECONDS
base=$(result_of k=f32,v=f32)
for s in "${SPECS[@]}"; do result_of "$s" > /dev/null; done
echo "$((SECONDS - t0))" >> "$OUT/ppl.time"
base_nll=$(field nll "$base")

echo "Needle mass through the cache / exact at exact mass 0.6, mean (10th percentile) over 128 probes per age bucket;"
echo "\"mentioned\": each probe's query also attended once when its needle was 48 tokens old; \"not mentioned\": only the"
echo "real queries attended (every 16th step). Key tokens: kvq-ppl, $WINDOWS x 4096 bytes of WikiText-2 test, Cache::attend."
echo
age_header "$OUT/mentioned.tsv" spec "bits/value" "key-token change vs FP32 (± 1 s.e.)" probe
for given in "${SPECS[@]}"; do
  res=$(result_of "$given")
  # The probe's TSV names specs in canonical form (CacheSpec::to_string, as kvq plan prints it).
  spec=$("$KVQ" plan --model llama-3.2-3b --context 32768 --spec "$given" | awk 'NR == 3 {print $1}')
  kd=$(field key_delta "$res") kse=$(field key_delta_se "$res")
  for name in mentioned observed; do
    label=$([[ $name == mentioned ]] && echo mentioned || echo "not mentioned")
    row=$(awk -F'\t' -v s="$spec" 'NR > 1 && $1 == s && $6 == "all" && $3 == 0.6 {printf " %.3f (%.2f) |", $8, $9}' "$OUT/$name.tsv")
    bits=$(awk -F'\t' -v s="$spec" 'NR > 1 && $1 == s {print $2; exit}' "$OUT/$name.tsv")
    if [[ $name == mentioned ]]; then
      printf '| `%s` | %s | %+.2f%% ± %.2f%% | %s |%s\n' "$spec" "$bits" \
        "$(awk -v x="$kd" 'BEGIN {print 100 * (exp(x) - 1)}')" "$(awk -v x="$kse" 'BEGIN {print 100 * x}')" "$label" "$row"
    else
      printf '| | | | %s |%s\n' "$label" "$row"
    fi
  done
done
echo
echo "Wall time: probe with mentions $(cat "$OUT/mentioned.time") s, without $(cat "$OUT/observed.time") s, kvq-ppl $(paste -sd+ "$OUT/ppl.time" | bc) s (${#SPECS[@]} specs + FP32; cached rows cost nothing)."
