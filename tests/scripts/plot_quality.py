#!/usr/bin/env python3
"""scripts/plot_quality.py draws one marker per result row and one line per spec, at the data.

Runs it on the committed result files (docs/results/) into a temporary directory and checks
the SVGs against the inputs read independently here: every file parses as XML; the memory plot
has one marker per table row, Pareto rows as squares; the needle plot has one line per spec of
the TSV's all-layer rows at mass 0.6, with one point per age bucket. Usage: plot_quality.py ROOT
"""
import csv
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

root = sys.argv[1]
NS = "{http://www.w3.org/2000/svg}"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


with tempfile.TemporaryDirectory() as out:
    subprocess.run([sys.executable, f"{root}/scripts/plot_quality.py", "--pareto", f"{root}/docs/results/key-tokens.md",
                    "--retrieval", f"{root}/docs/results/retrieval.tsv", "--out-dir", out], check=True)
    pareto = ET.parse(f"{out}/memory-vs-key-token-ppl.svg").getroot()
    needle = ET.parse(f"{out}/needle-mass-vs-age-0.6.svg").getroot()

rows = [l for l in open(f"{root}/docs/results/key-tokens.md", encoding="utf-8")
        if l.startswith("| ") and not l.startswith("| configuration")]
n_pareto = sum(1 for l in rows if l.rstrip().rstrip("|").rstrip().endswith("yes"))
markers_sq = len(pareto.findall(f"{NS}rect[@width='8']"))
markers_ci = len(pareto.findall(f"{NS}circle"))
check(markers_sq == n_pareto, f"memory plot: {markers_sq} squares for {n_pareto} Pareto rows")
check(markers_sq + markers_ci == len(rows), f"memory plot: {markers_sq + markers_ci} markers for {len(rows)} rows")

buckets = {}
with open(f"{root}/docs/results/retrieval.tsv", encoding="utf-8") as fh:
    for rec in csv.DictReader(fh, delimiter="\t"):
        if rec["layer"] == "all" and abs(float(rec["mass"]) - 0.6) < 1e-9:
            buckets.setdefault(rec["spec"], set()).add(rec["age_lo"])
lines = needle.findall(f"{NS}polyline")
check(len(lines) == len(buckets), f"needle plot: {len(lines)} lines for {len(buckets)} specs")
for pl in lines:
    n = len(pl.get("points").split())
    check(n == len(next(iter(buckets.values()))), f"needle plot: a line with {n} points")
legend = " ".join(t.text or "" for t in needle.iter(f"{NS}text"))
for spec in buckets:
    check(spec in legend, f"needle plot: {spec} not in the legend")

for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
