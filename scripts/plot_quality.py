#!/usr/bin/env python3
"""The pictures of docs/QUALITY.md, drawn from the result files its tables come from.

  memory at 32K (Llama-3.2-3B shape) vs key-token perplexity change: from a table printed by
      scripts/pareto.sh (markdown, with the key-token column), e.g. docs/results/key-tokens.md;
  needle attention mass vs needle age, one line per spec: from the TSV of
      `kvq eval --retrieval --out FILE` (all-layer rows at one exact mass), e.g.
      docs/results/retrieval.tsv.

Plain SVG written by hand (no plotting library needed; any browser or GitHub renders it):

  python3 scripts/plot_quality.py --pareto docs/results/key-tokens.md --retrieval docs/results/retrieval.tsv \\
      --out-dir docs/img
"""
import argparse
import csv
import math
import os
import re
import sys
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
DASHES = ["", "6,3", "2,2", "8,3,2,3"]


class Frame:
    """A plot area with linear or log axes mapped to SVG pixels."""

    def __init__(self, width, height, x_range, y_range, x_log=False, left=70, right=20, top=40, bottom=55):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x_log = x_log
        self.x0, self.x1 = (math.log10(v) for v in x_range) if x_log else x_range
        self.y0, self.y1 = y_range
        self.items = []

    def px(self, x):
        if self.x_log:
            x = math.log10(x)
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def py(self, y):
        return self.h - self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)

    def add(self, svg):
        self.items.append(svg)

    def text(self, x, y, s, size=11, anchor="start", color="#222", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}"{tr}>'
                 f'{escape(s)}</text>')

    def axes(self, title, x_label, y_label, x_ticks, y_ticks, x_fmt=str, y_fmt=str):
        l, r, t, b = self.left, self.w - self.right, self.top, self.h - self.bottom
        for v in y_ticks:
            y = self.py(v)
            self.add(f'<line x1="{l}" y1="{y:.1f}" x2="{r}" y2="{y:.1f}" stroke="#ddd"/>')
            self.text(l - 6, y + 4, y_fmt(v), anchor="end")
        for v in x_ticks:
            x = self.px(v)
            self.add(f'<line x1="{x:.1f}" y1="{t}" x2="{x:.1f}" y2="{b}" stroke="#eee"/>')
            self.text(x, b + 16, x_fmt(v), anchor="middle")
        self.add(f'<rect x="{l}" y="{t}" width="{r - l}" height="{b - t}" fill="none" stroke="#444"/>')
        self.text(self.w / 2, 22, title, size=14, anchor="middle")
        self.text((l + r) / 2, self.h - 14, x_label, anchor="middle")
        self.text(18, (t + b) / 2, y_label, anchor="middle", rotate=-90)

    def svg(self):
        body = "\n".join(self.items)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def nice_ticks(lo, hi, n=6):
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def read_pareto(path):
    """Rows of a pareto.sh table: label, spec, GiB at 32K, key-token change and its s.e. (percent)."""
    rows, header = [], None
    for line in open(path, encoding="utf-8"):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells[0]) <= set("-:"):
            continue
        rec = dict(zip(header, cells))
        key = rec.get("key-token change vs FP32 (± 1 s.e.)")
        if key is None:
            raise SystemExit(f"{path}: no key-token column (run scripts/pareto.sh with the key tokens)")
        m = re.match(r"([+-]?[0-9.]+)% ± ([0-9.]+)%", key)
        if not m:
            raise SystemExit(f"{path}: cannot read key-token cell '{key}'")
        rows.append({"label": rec["configuration"], "spec": rec["spec"].strip("`"),
                     "gib32k": float(rec["GiB at 32K"]), "key": float(m.group(1)), "se": float(m.group(2)),
                     "pareto": rec.get("Pareto", "") == "yes"})
    if not rows:
        raise SystemExit(f"{path}: no table rows")
    return rows


def plot_pareto(rows, out):
    xs = [r["gib32k"] for r in rows]
    lo = min(r["key"] - r["se"] for r in rows)
    hi = min(max(r["key"] + r["se"] for r in rows), 40.0)  # the worst rows are clipped, and say so
    f = Frame(1040, 560, (0.35, max(xs) * 1.1), (min(lo, -2.0) - 1.0, hi + 2.0), x_log=True, right=390)
    f.axes("Memory at 32K tokens vs key-token perplexity change (wt2-byte-a)",
           "GiB of K/V cache at 32K tokens, Llama-3.2-3B shape (log scale)",
           "key-token NLL change vs FP32 (%, ± 1 s.e.)",
           [v for v in (0.5, 1, 2, 4, 8) if f.x0 <= math.log10(v) <= f.x1], nice_ticks(f.y0, f.y1),
           x_fmt=lambda v: f"{v:g}", y_fmt=lambda v: f"{v:+g}%")
    f.add(f'<line x1="{f.left}" y1="{f.py(0):.1f}" x2="{f.w - f.right}" y2="{f.py(0):.1f}" stroke="#888" '
          f'stroke-dasharray="4,3"/>')
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["gib32k"])
    if len(front) > 1:
        pts = " ".join(f"{f.px(r['gib32k']):.1f},{f.py(min(r['key'], f.y1)):.1f}" for r in front)
        f.add(f'<polyline points="{pts}" fill="none" stroke="#2ca02c" stroke-width="1.5"/>')
    for i, r in enumerate(rows):
        c = COLORS[i % len(COLORS)]
        x, clipped = f.px(r["gib32k"]), r["key"] > f.y1
        y = f.py(min(r["key"], f.y1))
        clamp = lambda v: min(max(v, f.y0), f.y1)
        y_lo, y_hi = f.py(clamp(r["key"] - r["se"])), f.py(clamp(r["key"] + r["se"]))
        f.add(f'<line x1="{x:.1f}" y1="{y_lo:.1f}" x2="{x:.1f}" y2="{y_hi:.1f}" stroke="{c}"/>')
        shape = (f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{c}"/>' if r["pareto"]
                 else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{c}"/>')
        f.add(shape)
        f.text(x + 6, y - 5, str(i + 1), size=10, color=c)
        ly = f.top + 6 + i * 15
        f.text(f.w - f.right + 10, ly, f"{i + 1}. {r['label']}" + (" (off scale)" if clipped else ""), size=10,
               color=c)
    f.text(f.w - f.right + 10, f.top + 10 + len(rows) * 15, "squares: Pareto-optimal (green line)", size=10)
    write(out, f.svg())


def read_retrieval(path, mass):
    """All-layer rows of a retrieval TSV at one exact mass: spec -> [(age midpoint, mean, p10)], bits."""
    series, bits = {}, {}
    with open(path, encoding="utf-8") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            if rec["layer"] != "all" or abs(float(rec["mass"]) - mass) > 1e-9:
                continue
            lo, hi = float(rec["age_lo"]), float(rec["age_hi"])
            series.setdefault(rec["spec"], []).append((math.sqrt(lo * hi), float(rec["mean_ratio"]),
                                                       float(rec["p10_ratio"])))
            bits[rec["spec"]] = float(rec["bits_llama32k"])
    if not series:
        raise SystemExit(f"{path}: no all-layer rows at exact mass {mass}")
    return series, bits


def plot_retrieval(series, bits, mass, out, target=0.9):
    ages = [a for s in series.values() for a, _, _ in s]
    means = [m for s in series.values() for _, m, _ in s]
    f = Frame(1120, 600, (min(ages) / 1.5, max(ages) * 1.5), (max(0.0, min(means) - 0.05), 1.05), x_log=True,
              right=470)
    f.axes(f"Needle attention mass through the cache / exact (exact mass {mass:g}), by needle age",
           "needle age in tokens (log scale; bucket midpoints)", "needle mass / exact (mean over probes)",
           [v for v in (16, 64, 256, 1024, 4096, 16384, 32768) if f.x0 <= math.log10(v) <= f.x1],
           nice_ticks(f.y0, f.y1), x_fmt=lambda v: f"{v:g}" if v < 1024 else f"{v / 1024:g}K",
           y_fmt=lambda v: f"{v:.2f}")
    y = f.py(target)
    f.add(f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.w - f.right}" y2="{y:.1f}" stroke="#d62728" '
          f'stroke-dasharray="5,4"/>')
    f.text(f.left + 6, y - 5, f"target {target:g}", size=10, color="#d62728")
    order = sorted(series, key=lambda s: -bits[s])
    for i, spec in enumerate(order):
        c, dash = COLORS[i % len(COLORS)], DASHES[(i // len(COLORS)) % len(DASHES)]
        pts = sorted(series[spec])
        path = " ".join(f"{f.px(a):.1f},{f.py(max(m, f.y0)):.1f}" for a, m, _ in pts)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        f.add(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.6"{da}/>')
        for a, m, _ in pts:
            f.add(f'<circle cx="{f.px(a):.1f}" cy="{f.py(max(m, f.y0)):.1f}" r="2.5" fill="{c}"/>')
        f.text(f.w - f.right + 10, f.top + 6 + i * 15, f"{bits[spec]:.2f} b/v  {spec}", size=9.5, color=c)
    write(out, f.svg())


def write(path, text):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pareto", help="pareto.sh output with the key-token column")
    ap.add_argument("--retrieval", help="TSV of kvq eval --retrieval --out")
    ap.add_argument("--mass", type=float, default=0.6, help="exact needle mass to plot (default 0.6)")
    ap.add_argument("--out-dir", default="docs/img")
    ap.add_argument("--retrieval-name", help="file name of the needle-mass picture (default needle-mass-vs-age-MASS.svg)")
    a = ap.parse_args()
    if not a.pareto and not a.retrieval:
        ap.error("give --pareto and/or --retrieval")
    if a.pareto:
        plot_pareto(read_pareto(a.pareto), os.path.join(a.out_dir, "memory-vs-key-token-ppl.svg"))
    if a.retrieval:
        series, bits = read_retrieval(a.retrieval, a.mass)
        name = a.retrieval_name or f"needle-mass-vs-age-{a.mass:g}.svg"
        plot_retrieval(series, bits, a.mass, os.path.join(a.out_dir, name))


if __name__ == "__main__":
    main()
