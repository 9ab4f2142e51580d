#!/usr/bin/env python3
"""Summarizes kvq_bench_decode's output (its markdown tables) for the README:
one row per spec at one context, cold, with the fraction of bandwidth at each
GQA for one and two threads, the GQA-8 / GQA-1 step ratio, and the prefill
fraction of the FMA peak.  Usage: decode_summary.py OUTPUT.md [--context N]"""
import sys

def rows(path):
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].startswith("k=") and cells[1].isdigit():
            yield cells

def main():
    path = sys.argv[1]
    context = sys.argv[sys.argv.index("--context") + 1] if "--context" in sys.argv else "32768"
    step, prefill, order = {}, {}, []
    for c in rows(path):
        if len(c) == 11:  # decode: spec context gqa threads mode KiB us GB/s frac target ratio
            spec, ctx, gqa, th, mode = c[0], c[1], int(c[2]), int(c[3]), c[4]
            if ctx != context:
                continue
            if spec not in order:
                order.append(spec)
            step[(spec, gqa, th, mode)] = (float(c[6]), float(c[8]))
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("k=") and cells[1] == context:
            prefill[cells[0]] = float(cells[4])
    print(f"| spec | KiB read | GQA 1 | GQA 4 | GQA 8 | GQA 8 / GQA 1 step | GQA 1, 2 threads | hot GQA 1, 1 / 2 threads (us) | prefill, frac of FMA peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    kib = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0].startswith("k=") and cells[1] == context:
            kib[cells[0]] = cells[5]
    for spec in order:
        def cell(g, th=1, mode="cold"):
            v = step.get((spec, g, th, mode))
            return f"{v[1]:.2f} ({v[0]:.0f} us)" if v else "-"
        g1, g8 = step.get((spec, 1, 1, "cold")), step.get((spec, 8, 1, "cold"))
        ratio = f"{g8[0] / g1[0]:.2f}x" if g1 and g8 else "-"
        h1, h2 = step.get((spec, 1, 1, "hot")), step.get((spec, 1, 2, "hot"))
        hot = f"{h1[0]:.0f} / {h2[0]:.0f} ({h1[0] / h2[0]:.2f}x)" if h1 and h2 else "-"
        pf = f"{prefill[spec]:.2f}" if spec in prefill else "-"
        print(f"| {spec} | {kib.get(spec, '-')} | {cell(1)} | {cell(4)} | {cell(8)} | {ratio} | {cell(1, 2)} | {hot} | {pf} |")

if __name__ == "__main__":
    main()
