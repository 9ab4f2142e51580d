#!/usr/bin/env python3
"""Markdown tables from kvq_bench_kernels' JSON output (medians over repetitions).

    ./build/bench/kvq_bench_kernels --benchmark_filter='cold' --benchmark_repetitions=3 \
        --benchmark_report_aggregates_only=true --benchmark_format=json > bench.json
    python3 bench/table.py bench.json

Prints, per codec and context length, the cold (DRAM) fraction of measured read
bandwidth and GB/s of compressed cache for scores and accumulate at GQA 1 and 4,
then encode throughput and the 1- vs 2-thread runs (filter 'cold|encode' for all).
"""
import json
import re
import sys


def main(path):
    with open(path) as f:
        data = json.load(f)
    ctx = data["context"]
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        m = re.match(r"(\w+)/(scores|accumulate)/cold(/mt)?/tokens:(\d+)/gqa:(\d+)(?:/threads:(\d+))?", b["run_name"])
        if not m:
            continue
        codec, op, mt, tokens, gqa, threads = m.groups()
        key = (codec, int(tokens), "mt" if mt else "st")
        rows.setdefault(key, {})[(op, int(gqa), int(threads or 1))] = (b["bytes/s"], b["frac_bw"], b["rows/s"])

    bw = float(ctx.get("read_bandwidth_GBps", "nan"))
    print(f"Host: {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs, kernels on "
          f"{ctx.get('kvq_target', '?')}, measured single-core read bandwidth {bw:.1f} GB/s, "
          f"load average {ctx.get('load_avg', ['?'])[0] if ctx.get('load_avg') else '?'}.\n")

    def cell(v):
        return f"{v[1]:.2f} ({v[0] / 1e9:.1f} GB/s)" if v else "-"

    print("| codec | tokens | scores GQA 1 | scores GQA 4 | accumulate GQA 1 | accumulate GQA 4 | Mtok/s scores GQA 1 |")
    print("|---|---|---|---|---|---|---|")
    for (codec, tokens, kind), r in rows.items():
        if kind != "st":
            continue
        s1 = r.get(("scores", 1, 1))
        mtok = f"{s1[2] / 1e6:.0f}" if s1 else "-"
        print(f"| {codec} | {tokens} | {cell(s1)} | {cell(r.get(('scores', 4, 1)))} | "
              f"{cell(r.get(('accumulate', 1, 1)))} | {cell(r.get(('accumulate', 4, 1)))} | {mtok} |")
    enc = [b for b in data["benchmarks"]
           if b.get("aggregate_name") == "median" and b["run_name"].endswith("/encode")]
    if enc:
        print("\n| codec | encode M tokens/s | input GB/s |")
        print("|---|---|---|")
        for b in enc:
            print(f"| {b['run_name'].split('/')[0]} | {b['tokens/s'] / 1e6:.2f} | {b['input_bytes/s'] / 1e9:.2f} |")
    mt = [(k, r) for k, r in rows.items() if k[2] == "mt"]
    if mt:
        print("\n| codec | tokens | op | GQA | 1 thread | 2 threads | speed-up |")
        print("|---|---|---|---|---|---|---|")
        for (codec, tokens, _), r in mt:
            for op in ("scores", "accumulate"):
                for gqa in (1, 4):
                    one, two = r.get((op, gqa, 1)), r.get((op, gqa, 2))
                    if one and two:
                        print(f"| {codec} | {tokens} | {op} | {gqa} | {cell(one)} | {cell(two)} | "
                              f"{two[0] / one[0]:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")
