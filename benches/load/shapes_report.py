#!/usr/bin/env python3
"""The overload shapes' report: reads results.jsonl written by
`overload shapes` and `overload proxy` (benches/load/shapes.rs), prints the
table for benches/README.md and draws one chart per shape with chart.py.

    shapes_report.py OUT_DIR CHART_DIR
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CAPACITY = 8

TITLES = {
    "retrograde": "retrograde: 20 ms + 60 ms per extra open connection",
    "plateau": "plateau: 50 ms flat up to 5 deliveries at once",
    "step": "step: 60 ms flat up to 6, only 3 at once from 5 s to 35 s",
    "outage": "outage: down from 3 s to 23 s, then flat up to 6 at 60 ms",
}
MARKS = {
    "step": ["5|half capacity", "35|full capacity"],
    "outage": ["3|down", "23|back"],
}


def load(out):
    runs = {}
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            runs.setdefault(r["shape"], {})[r["run"]] = r
    return runs


def pct(x, best):
    return f"{100 * x / best:.0f} %" if best else "-"


def report(runs):
    print()
    print("shape       run        goodput     of best fixed   peak conn  421s   lost  notes")
    for shape in ("retrograde", "plateau", "step", "outage"):
        if shape not in runs:
            continue
        rs = runs[shape]
        fixed = {k: r for k, r in rs.items() if k.startswith("fixed-")}
        best = max(fixed.values(), key=lambda r: r["goodput"]) if fixed else None
        best_g = best["goodput"] if best else 0.0
        order = ["adaptive"] + ([best["run"]] if best else []) + ["postfix"]
        for name in order:
            r = rs.get(name)
            if not r:
                continue
            notes = []
            if r.get("drained") is not None and shape != "outage":
                notes.append(f"all {r['messages']} in {r['drained']:.1f} s")
            if r.get("flowing_after") is not None:
                notes.append(f"flowing {r['flowing_after']:.2f} s after the return")
            if r.get("outage_attempts") is not None:
                notes.append(f"{r['outage_attempts']} connections while down")
            if shape == "outage" and r.get("drained") is not None:
                notes.append(f"drained {r['drained'] - 23:.1f} s after the return")
            elif shape == "outage":
                notes.append("not drained")
            label = f"best fixed ({name[6:]})" if name.startswith("fixed-") else name
            lost = "-" if r.get("lost") is None else str(r["lost"])
            print(
                f"{shape:<11} {label:<16} {r['goodput']:6.1f}/s  {pct(r['goodput'], best_g):>9}  "
                f"{r['peak_connections']:>9}  {r['refused_421']:>5}  {lost:>5}  {'; '.join(notes)}"
            )
        if fixed:
            sweep = "  ".join(f"{k[6:]}: {r['goodput']:.1f}" for k, r in sorted(fixed.items(), key=lambda x: int(x[0][6:])))
            print(f"{'':<11} fixed sweep (msg/s)  {sweep}")


def charts(runs, out, chart_dir):
    os.makedirs(chart_dir, exist_ok=True)
    for shape, rs in runs.items():
        fixed = {k: r for k, r in rs.items() if k.startswith("fixed-")}
        series = []
        for name, label in [("adaptive", "sluice adaptive")]:
            if name in rs:
                series.append((label, name))
        if fixed:
            best = max(fixed.values(), key=lambda r: r["goodput"])["run"]
            series.append((f"sluice fixed {best[6:]} (best fixed)", best))
            series.append((f"sluice fixed {CAPACITY}", f"fixed-{CAPACITY}"))
        if "postfix" in rs:
            series.append(("postfix", "postfix"))
        window = max(r["window"] for r in rs.values())
        until = window if shape != "outage" else 60
        cmd = [
            sys.executable, os.path.join(HERE, "chart.py"),
            "--out", os.path.join(chart_dir, f"overload-{shape}.svg"),
            "--title", TITLES.get(shape, shape),
            "--panel", "connections|connections open at the server",
            "--panel", "rate(delivered)|goodput (messages/s)",
            "--hline", f"1:{CAPACITY}|421 past {CAPACITY}",
            "--until", str(until),
        ]
        for m in MARKS.get(shape, []):
            cmd += ["--mark", m]
        cmd += [f"{label}={os.path.join(out, f'{shape}-{name}.csv')}" for label, name in series]
        subprocess.run(cmd, check=True)
        print(f"chart: {os.path.join(chart_dir, f'overload-{shape}.svg')}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, chart_dir = sys.argv[1], sys.argv[2]
    runs = load(out)
    report(runs)
    charts(runs, out, chart_dir)


if __name__ == "__main__":
    main()
