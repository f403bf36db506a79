#!/usr/bin/env python3
"""The overload shapes' report: reads results.jsonl written by
`overload shapes`, `overload fleet` and `overload proxy`
(benches/load/shapes.rs, fleet.rs), prints the tables for benches/README.md
and draws one chart per shape (the fleet runs: benches/charts/fleet.svg)
with chart.py.

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


FLEET_RUNS = [
    ("single-fixed-1", "1 host, fixed limit 1"),
    ("single", "1 host, adaptive"),
    ("nofleet-3", "3 hosts, no fleet mode"),
    ("fleet-3", "3 hosts, fleet mode"),
    ("fleet-6", "6 hosts, fleet mode"),
    ("postfix-3", "3 Postfix instances"),
]
FLEET_BACK = 13.0


def fleet_report(rs):
    best = rs.get("single-fixed-1", {}).get("goodput", 0.0)
    print()
    print("setup                    goodput  of 1 host fixed 1  peak conn  421s  lost  flowing after  drained after")
    for name, label in FLEET_RUNS:
        r = rs.get(name)
        if not r:
            continue
        lost = "-" if r.get("lost") is None else str(r["lost"])
        flowing = "-" if r.get("flowing_after") is None else f"{r['flowing_after']:.2f} s"
        drained = "not drained" if r.get("drained") is None else f"{r['drained'] - FLEET_BACK:.1f} s"
        print(
            f"{label:<24} {r['goodput']:5.1f}/s  {pct(r['goodput'], best):>17}  {r['peak_connections']:>9}  "
            f"{r['refused_421']:>4}  {lost:>4}  {flowing:>13}  {drained:>13}"
        )


def fleet_chart(rs, out, chart_dir):
    series = [(label, name) for name, label in FLEET_RUNS if name in rs and name != "single"]
    path = os.path.join(chart_dir, "fleet.svg")
    cmd = [
        sys.executable, os.path.join(HERE, "chart.py"),
        "--out", path,
        "--title", "several MX hosts, one server: 20 ms + 60 ms per extra connection, down from 3 s to 13 s",
        "--panel", "connections|connections open at the server",
        "--panel", "rate(delivered)|deliveries (messages/s)",
        "--hline", f"1:{CAPACITY}|421 past {CAPACITY}",
        "--mark", "3|down", "--mark", f"{FLEET_BACK:g}|back",
        "--until", "40",
    ]
    cmd += [f"{label}={os.path.join(out, f'fleet-{name}.csv')}" for label, name in series]
    subprocess.run(cmd, check=True)
    print(f"chart: {path}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, chart_dir = sys.argv[1], sys.argv[2]
    runs = load(out)
    fleet = runs.pop("fleet", None)
    report(runs)
    charts(runs, out, chart_dir)
    if fleet:
        os.makedirs(chart_dir, exist_ok=True)
        fleet_report(fleet)
        fleet_chart(fleet, out, chart_dir)


if __name__ == "__main__":
    main()
