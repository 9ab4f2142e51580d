#!/usr/bin/env bash
# Behaviour of the `kvq` tool: round trips, and one-line errors with non-zero
# status for every kind of bad input. Usage: cli.sh path/to/kvq
set -u
kvq="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass=0
check() {  # check NAME CONDITION...
  local name="$1"; shift
  if "$@"; then pass=$((pass + 1)); else echo "FAILED: $name"; fails=$((fails + 1)); fi
}
# expect_error NAME STDIN-FILE ARGS...: non-zero exit, exactly one line on stderr, nothing on stdout.
expect_error() {
  local name="$1" input="$2"; shift 2
  "$kvq" "$@" <"$input" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  check "$name: exit status" test "$rc" -ne 0
  check "$name: one line on stderr" test "$(wc -l <"$tmp/err")" -eq 1
  check "$name: no stdout" test ! -s "$tmp/out"
  [ "$rc" -ge 128 ] && { echo "FAILED: $name crashed (status $rc)"; fails=$((fails + 1)); }
}
# Every command prints its help for --help (exit 0, usage on stdout), e.g. kvq plan --help.
for cmd in plan codecs encode decode eval calibrate; do
  out=$("$kvq" "$cmd" --help 2>&1); rc=$?
  check "$cmd --help: exit 0" test "$rc" -eq 0
  check "$cmd --help: usage" grep -q "^usage: kvq $cmd" <<<"$out"
done
# kvq plan --gguf: the real model's shape; a missing file is a one-line error.
if [ -f "$(dirname "$0")/../../../shared/models/wt2-byte-a.gguf" ]; then
  out=$("$kvq" plan --gguf "$(dirname "$0")/../../../shared/models/wt2-byte-a.gguf" --spec k=q4_0,v=q4_0)
  check "plan --gguf: shape from the file" grep -q "8 layers (8 with a KV cache), 8 q heads, 2 KV heads, head_dim 64" <<<"$out"
fi
expect_error "plan --gguf missing file" /dev/null plan --gguf "$tmp/none.gguf"
python3 - "$tmp" <<'PY'
import struct, sys, math, random
d = sys.argv[1]
random.seed(1)
rows = [[random.gauss(0, 1) for _ in range(64)] for _ in range(5)]
open(f"{d}/rows.f32", "wb").write(b"".join(struct.pack("<64f", *r) for r in rows))
bad = rows[0][:]; bad[10] = float("nan")
open(f"{d}/nan.f32", "wb").write(struct.pack("<64f", *bad))
bad[10] = float("inf")
open(f"{d}/inf.f32", "wb").write(struct.pack("<64f", *bad))
open(f"{d}/short.f32", "wb").write(b"\0" * (64 * 4 + 3))
huge = [0.0] * 64; huge[3] = 1.0e6  # a turbo row's fp16 scale |x|/|c| overflows
open(f"{d}/huge.f32", "wb").write(struct.pack("<64f", *huge))
PY
: >"$tmp/empty"

"$kvq" codecs >"$tmp/codecs"
check "codecs lists q4_0 at 4.5 bits/value" grep -Eq '^q4_0 +uniform +4\.5000 +1 ' "$tmp/codecs"
check "codecs lists q8_0" grep -Eq '^q8_0 +uniform +8\.5000 +1 ' "$tmp/codecs"

for codec in $("$kvq" codecs | awk 'NR > 1 {print $1}'); do
  tiles=$("$kvq" codecs | awk -v c="$codec" '$1 == c {print $4}')
  if [ "$tiles" = 1 ]; then
    "$kvq" encode --codec "$codec" --dim 64 <"$tmp/rows.f32" >"$tmp/enc" 2>"$tmp/err"
    check "$codec: encode succeeds" test $? -eq 0
    "$kvq" decode --codec "$codec" --dim 64 <"$tmp/enc" >"$tmp/dec" 2>"$tmp/err"
    check "$codec: decode succeeds" test $? -eq 0
    check "$codec: decode gives 5 rows back" test "$(stat -c %s "$tmp/dec")" -eq $((5 * 64 * 4))
    python3 - "$tmp/rows.f32" "$tmp/dec" "$codec" <<'PY' || { echo "FAILED: $codec round-trip error"; fails=$((fails + 1)); }
import struct, sys
a = struct.unpack(f"<{320}f", open(sys.argv[1], "rb").read())
b = struct.unpack(f"<{320}f", open(sys.argv[2], "rb").read())
err = max(abs(x - y) for x, y in zip(a, b))
bound = {"q8_0": 0.03, "q4_0": 0.6, "q4_1": 0.3, "q3_1": 0.6, "q2_1": 1.2,
         "turbo4": 0.5, "turbo3": 0.9, "turbo2": 1.3}.get(sys.argv[3], 1.5)
sys.exit(0 if err <= bound else 1)
PY
  fi
  expect_error "$codec: NaN input" "$tmp/nan.f32" encode --codec "$codec" --dim 64
  expect_error "$codec: Inf input" "$tmp/inf.f32" encode --codec "$codec" --dim 64
  expect_error "$codec: partial row" "$tmp/short.f32" encode --codec "$codec" --dim 64
  expect_error "$codec: unsupported dim" "$tmp/rows.f32" encode --codec "$codec" --dim 7
  expect_error "$codec: truncated encoded input" "$tmp/short.f32" decode --codec "$codec" --dim 64
done
for codec in turbo2 turbo3 turbo4; do
  expect_error "$codec: norm overflowing the fp16 scale" "$tmp/huge.f32" encode --codec "$codec" --dim 64
done
expect_error "unknown codec" "$tmp/rows.f32" encode --codec q5_k --dim 64
expect_error "missing --dim" "$tmp/rows.f32" encode --codec q4_0
expect_error "non-numeric --dim" "$tmp/rows.f32" encode --codec q4_0 --dim abc
expect_error "negative --dim" "$tmp/rows.f32" encode --codec q4_0 --dim -64
expect_error "unknown command" "$tmp/empty" frobnicate
# A q4_0 block whose fp16 scale is Inf decodes to non-finite values: refused.
printf '\x00\x7c%016d' 0 | head -c 18 >"$tmp/infscale"
expect_error "decode of an Inf scale" "$tmp/infscale" decode --codec q4_0 --dim 32
# Empty input is zero rows: empty output, success.
"$kvq" encode --codec q4_0 --dim 64 <"$tmp/empty" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "empty input gives empty output (status $rc, $(stat -c %s "$tmp/out") bytes, stderr: $(head -c 200 "$tmp/err"))" \
  test "$rc" -eq 0 -a ! -s "$tmp/out"

# kvq eval --retrieval: bad options and a missing dump directory are one-line errors.
expect_error "retrieval --context 0" /dev/null eval --retrieval --context 0 k=q8_0,v=q8_0
expect_error "retrieval --needles x" /dev/null eval --retrieval --needles x k=q8_0,v=q8_0
expect_error "retrieval --max-beta -1" /dev/null eval --retrieval --max-beta -1 k=q8_0,v=q8_0
expect_error "retrieval --masses x" /dev/null eval --retrieval --masses 0.5,x k=q8_0,v=q8_0
expect_error "retrieval bad spec" /dev/null eval --retrieval k=nope,v=q8_0
expect_error "retrieval missing dumps" /dev/null eval --retrieval --dir "$tmp/none" k=q8_0,v=q8_0
shared_dumps="$(dirname "$0")/../../../shared/data/kv-dumps/wt2-byte-a"
if [ -f "$shared_dumps/k.npy" ]; then  # ages that do not fit the context are refused before any output
  expect_error "retrieval ages past the context" /dev/null eval --retrieval --dir "$shared_dumps" --context 4096 \
    --ages 16,8192 k=q8_0,v=q8_0
fi

# kvq calibrate: a missing or double budget, bad codecs, metrics, files and budgets below the
# cheapest assignment are one-line errors (before any measuring); a small run prints a spec
# that kvq plan accepts, within its budget.
expect_error "calibrate no budget" /dev/null calibrate --dumps "$tmp/none"
expect_error "calibrate two budgets" /dev/null calibrate --bits 3 --bytes 100 --dumps "$tmp/none"
expect_error "calibrate missing dumps" /dev/null calibrate --bits 3 --dumps "$tmp/none"
expect_error "calibrate missing table" /dev/null calibrate --bits 3 --sensitivity "$tmp/none.tsv"
expect_error "calibrate bad price model" /dev/null calibrate --bits 3 --price-model gpt --dumps "$tmp/none"
if [ -f "$shared_dumps/k.npy" ]; then
  small=(--dumps "$shared_dumps" --tokens 256 --stride 64)
  expect_error "calibrate unknown codec" /dev/null calibrate --bits 3 "${small[@]}" --k-codecs f32,q9_9
  expect_error "calibrate per-channel V" /dev/null calibrate --bits 3 "${small[@]}" --v-codecs f32,pc4
  expect_error "calibrate bad metric" /dev/null calibrate --bits 3 "${small[@]}" --metric mse
  expect_error "calibrate budget below the cheapest" /dev/null calibrate --bits 2 "${small[@]}" --k-codecs f32,q4_0 \
    --v-codecs f32,q4_0
  out=$("$kvq" calibrate --bits 12 --context 4096 "${small[@]}" --k-codecs f32,q8_0,q4_0 --v-codecs f32,q4_0 \
    --window 16 --out "$tmp/sens.tsv" 2>"$tmp/err"); rc=$?
  check "calibrate: exit 0" test "$rc" -eq 0
  spec=$(sed -n 's/^spec //p' <<<"$out")
  check "calibrate: a layers= spec" grep -q '^k=.*,layers=.*,window=16$' <<<"$spec"
  bits=$("$kvq" plan --model wt2-byte-a --context 4096 --spec "$spec" | awk 'NR == 3 {print $5}')
  check "calibrate: kvq plan prices the spec within 12 bits/value" awk -v b="$bits" 'BEGIN {exit !(b > 4 && b <= 12)}'
  again=$("$kvq" calibrate --bits 12 --context 4096 --sensitivity "$tmp/sens.tsv")
  check "calibrate: the written table gives the same spec" test "$(sed -n 's/^spec //p' <<<"$again")" = "$spec"
  expect_error "calibrate window differs from the table" /dev/null calibrate --bits 12 --sensitivity "$tmp/sens.tsv" \
    --window 32
fi

echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
