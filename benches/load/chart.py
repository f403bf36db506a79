#!/usr/bin/env python3
"""Time-series charts for the load benches, as SVG (Python stdlib only).

Each series is a CSV file with a header line; the first column is time in
seconds, the others are values (gauges, or counters that only grow). The
chart stacks one panel per --panel, all sharing the time axis, one line
per series in each.

    chart.py --out chart.svg --title "retrograde server" \\
        --panel 'connections|open connections' \\
        --panel 'rate(delivered)|goodput (msg/s)' \\
        --mark '5|step' --hline '1:8|421 past 8' \\
        adaptive=runs/adaptive.csv 'fixed 1=runs/fixed-1.csv'

--panel COLUMN|TITLE   a column as it is, or rate(COLUMN): a counter's rise
                       per second over --bucket seconds (default 1)
--mark T|LABEL         a dashed vertical line at T seconds
--hline P:Y|LABEL      a dashed horizontal line at Y on panel P (from 1)
--until T              cut the time axis at T seconds
LABEL=FILE             a series (the legend shows LABEL)

Benches that want a chart write their samples as such CSV files and call
this script; the SVG goes under benches/ and is linked from
benches/README.md.
"""

import argparse
import csv
import math
import sys
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
WIDTH = 860
PANEL_HEIGHT = 210
LEFT, RIGHT, TOP, GAP, BOTTOM = 64, 24, 74, 46, 40


def read_series(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], {}
    header = rows[0]
    cols = {name: [] for name in header[1:]}
    times = []
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        try:
            values = [float(x) for x in row]
        except ValueError:
            continue
        times.append(values[0])
        for name, v in zip(header[1:], values[1:]):
            cols[name].append(v)
    return times, cols


def rate(times, values, bucket):
    """A counter's rise per second over consecutive buckets (points at
    each bucket's end)."""
    if not times:
        return [], []
    out_t, out_v = [], []
    end = math.floor(times[0] / bucket) * bucket + bucket
    i, last_v, last_t = 0, None, None
    start_v = values[0]
    while i < len(times):
        while i < len(times) and times[i] <= end:
            last_v, last_t = values[i], times[i]
            i += 1
        if last_v is not None:
            out_t.append(end)
            out_v.append((last_v - start_v) / bucket)
            start_v = last_v
        end += bucket
    return out_t, out_v


def nice_step(span, ticks=5):
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt(v):
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.3g}"


def chart(args):
    series = []
    for spec in args.series:
        label, _, path = spec.partition("=")
        if not path:
            sys.exit(f"series {spec!r}: expected LABEL=FILE")
        series.append((label, read_series(path)))
    panels = []
    for spec in args.panel:
        column, _, title = spec.partition("|")
        panels.append((column.strip(), title.strip() or column.strip()))
    if not panels:
        sys.exit("at least one --panel")

    # Every panel's lines, per series: (xs, ys).
    lines = []
    t_max = 0.0
    for column, _ in panels:
        per = []
        for _, (times, cols) in series:
            if column.startswith("rate(") and column.endswith(")"):
                name = column[5:-1]
                xs, ys = rate(times, cols.get(name, []), args.bucket) if name in cols else ([], [])
            else:
                xs, ys = (times, cols[column]) if column in cols else ([], [])
            if args.until is not None:
                pts = [(x, y) for x, y in zip(xs, ys) if x <= args.until]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            per.append((xs, ys))
            if xs:
                t_max = max(t_max, xs[-1])
        lines.append(per)
    if args.until is not None:
        t_max = args.until
    t_max = t_max or 1.0

    height = TOP + len(panels) * PANEL_HEIGHT + (len(panels) - 1) * GAP + BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{escape(args.title)}</text>',
    ]
    # Legend.
    x = LEFT
    for i, (label, _) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        out.append(f'<line x1="{x}" y1="38" x2="{x + 18}" y2="38" stroke="{c}" stroke-width="2.5"/>')
        out.append(f'<text x="{x + 23}" y="42">{escape(label)}</text>')
        x += 34 + 7 * len(label)

    t_step = nice_step(t_max, 8)
    hlines = {}
    for spec in args.hline:
        where, _, label = spec.partition("|")
        p, _, y = where.partition(":")
        hlines.setdefault(int(p) - 1, []).append((float(y), label))

    for p, ((_, title), per) in enumerate(zip(panels, lines)):
        top = TOP + p * (PANEL_HEIGHT + GAP)
        bottom = top + PANEL_HEIGHT
        y_max = max([max(ys) for _, ys in per if ys] + [y for y, _ in hlines.get(p, [])] + [1.0])
        y_step = nice_step(y_max * 1.05, 5)
        y_top = math.ceil(y_max * 1.05 / y_step) * y_step

        def sx(t):
            return LEFT + plot_w * t / t_max

        def sy(v, top=top, y_top=y_top):
            return top + PANEL_HEIGHT * (1 - v / y_top)

        out.append(f'<text x="{LEFT}" y="{top - 8}" font-weight="bold">{escape(title)}</text>')
        # Grid and axes.
        v = 0.0
        while v <= y_top + 1e-9:
            out.append(f'<line x1="{LEFT}" y1="{sy(v):.1f}" x2="{LEFT + plot_w}" y2="{sy(v):.1f}" stroke="#e4e4e4"/>')
            out.append(f'<text x="{LEFT - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
            v += y_step
        t = 0.0
        while t <= t_max + 1e-9:
            out.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{bottom}" stroke="#f0f0f0"/>')
            out.append(f'<text x="{sx(t):.1f}" y="{bottom + 15}" text-anchor="middle">{fmt(t)}</text>')
            t += t_step
        out.append(f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>')
        for spec in args.mark:
            at, _, label = spec.partition("|")
            mx = sx(float(at))
            out.append(f'<line x1="{mx:.1f}" y1="{top}" x2="{mx:.1f}" y2="{bottom}" stroke="#555" stroke-dasharray="4 3"/>')
            if p == 0 and label:
                out.append(f'<text x="{mx + 3:.1f}" y="{top + 12}" fill="#555">{escape(label)}</text>')
        for y, label in hlines.get(p, []):
            out.append(
                f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{LEFT + plot_w}" y2="{sy(y):.1f}" '
                f'stroke="#666" stroke-dasharray="2 3"/>'
            )
            if label:
                out.append(f'<text x="{LEFT + plot_w - 4}" y="{sy(y) - 4:.1f}" text-anchor="end" fill="#444">{escape(label)}</text>')
        for i, (xs, ys) in enumerate(per):
            if not xs:
                continue
            c = COLOURS[i % len(COLOURS)]
            pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(xs, ys))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.6" stroke-linejoin="round"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{height - 8}" text-anchor="middle">seconds</text>')
    out.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--panel", action="append", default=[])
    ap.add_argument("--mark", action="append", default=[])
    ap.add_argument("--hline", action="append", default=[])
    ap.add_argument("--bucket", type=float, default=1.0)
    ap.add_argument("--until", type=float, default=None)
    ap.add_argument("series", nargs="+")
    chart(ap.parse_args())


if __name__ == "__main__":
    main()
