#!/usr/bin/env python3
"""Check that `kvq encode` writes the bytes ggml's reference quantizers write.

An independent transliteration of ggml's quantize_row_{q8_0,q4_0,q4_1}_ref
rounding rules in numpy float32 arithmetic (not sharing a line of code with
kvq), run on random rows of several distributions, compared byte for byte with
the output of `kvq encode`. Exit 77 (CTest "skipped") when numpy is missing.
"""
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("numpy not installed: skipping ggml byte comparison")
    sys.exit(77)

f32 = np.float32


def fp16_bytes(v):
    return np.array([v], dtype=np.float32).astype(np.float16).tobytes()  # IEEE RNE


def round_half_away(v):  # C roundf, computed exactly in double
    v = float(v)
    return int(np.copysign(np.floor(abs(v) + 0.5), v))


def q8_0(block):
    amax = f32(np.max(np.abs(block)))
    d = f32(amax / f32(127))
    inv = f32(f32(1) / d) if d != 0 else f32(0)
    qs = [round_half_away(f32(x * inv)) for x in block]
    return fp16_bytes(d) + np.array(qs, dtype=np.int8).tobytes()


def q4_0(block):
    amax, mx = f32(0), f32(0)
    for x in block:
        if amax < abs(x):
            amax, mx = f32(abs(x)), x
    d = f32(mx / f32(-8))
    inv = f32(f32(1) / d) if d != 0 else f32(0)
    out = bytearray(fp16_bytes(d))
    for j in range(16):
        n0 = min(15, int(np.trunc(f32(f32(block[j] * inv) + f32(8.5)))))
        n1 = min(15, int(np.trunc(f32(f32(block[j + 16] * inv) + f32(8.5)))))
        out.append(n0 | (n1 << 4))
    return bytes(out)


def q4_1(block):
    lo, hi = f32(np.min(block)), f32(np.max(block))
    d = f32(f32(hi - lo) / f32(15))
    inv = f32(f32(1) / d) if d != 0 else f32(0)
    out = bytearray(fp16_bytes(d) + fp16_bytes(lo))
    for j in range(16):
        n0 = min(15, int(np.trunc(f32(f32(f32(block[j] - lo) * inv) + f32(0.5)))))
        n1 = min(15, int(np.trunc(f32(f32(f32(block[j + 16] - lo) * inv) + f32(0.5)))))
        out.append(n0 | (n1 << 4))
    return bytes(out)


def main():
    kvq = sys.argv[1]
    rng = np.random.default_rng(2024)
    dim, rows = 128, 300
    data = np.concatenate([
        rng.standard_normal((100, dim)),
        rng.standard_normal((100, dim)) * 50 + 3,
        rng.integers(-8, 8, (50, dim)) * 0.25,          # exact ties of the rounding rules
        rng.uniform(-1, 1, (50, dim)) * np.logspace(-6, 4, 50)[:, None],
    ]).astype(np.float32)
    assert data.shape == (rows, dim)
    failures = 0
    for name, fn in (("q8_0", q8_0), ("q4_0", q4_0), ("q4_1", q4_1)):
        expect = b"".join(fn(row[b:b + 32]) for row in data for b in range(0, dim, 32))
        got = subprocess.run([kvq, "encode", "--codec", name, "--dim", str(dim)],
                             input=data.tobytes(), capture_output=True, check=True).stdout
        if got != expect:
            bad = next(i for i in range(min(len(got), len(expect))) if got[i] != expect[i]) \
                if len(got) == len(expect) else -1
            print(f"{name}: MISMATCH (first differing byte {bad}, sizes {len(got)} vs {len(expect)})")
            failures += 1
        else:
            print(f"{name}: {rows} rows, {len(got)} bytes identical to ggml's rules")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
