#!/usr/bin/env python3
"""A flame graph as SVG from `perf script` output (Python stdlib only).

    perf script -i perf.data | benches/load/flame.py --title "sluice" > flame.svg

Each sample's stack (innermost frame first, as perf script prints it) is
folded into one root-to-leaf path; the SVG draws every frame as a box as
wide as the share of samples it is on, callers below callees. Boxes
narrower than --min-width pixels are left out. Frames are coloured by
where they live: the kernel, RocksDB and libc/C++, or sluice and its
crates. --folded FILE also writes the folded stacks (`a;b;c count` lines,
the format inferno and flamegraph.pl read). --top N prints the N frames
with the most samples on their stack (inclusive) to stderr.
"""

import argparse
import re
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

WIDTH = 1200
ROW = 16


def fold(lines):
    """Yields (stack tuple root first, 1) per sample of `perf script`."""
    stack = []
    in_sample = False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield tuple(reversed(stack))
            stack = []
            in_sample = False
            continue
        if not line.startswith((" ", "\t")):
            in_sample = True  # the sample's header line
            stack = []
            continue
        if in_sample:
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            sym = parts[1]
            # "symbol+0x1f (dso)": keep the symbol, and the dso when unknown.
            m = re.match(r"(.*?)(\+0x[0-9a-f]+)? \((.*)\)$", sym)
            if m:
                name, dso = m.group(1), m.group(3)
                if name in ("[unknown]", ""):
                    name = "[" + dso.rsplit("/", 1)[-1] + "]"
            else:
                name = sym
            name = re.sub(r"::h[0-9a-f]{16}$", "", name)
            # Async frames carry whole type signatures: keep the start.
            if len(name) > 160:
                name = name[:157] + "..."
            stack.append(name)
    if stack:
        yield tuple(reversed(stack))


def colour(name):
    if name.startswith("[k]") or re.match(r"^(__|do_|sys_|tcp_|ip_|ext4_|entry_|schedule|futex|x64_)", name):
        return "#f28e2b"  # kernel
    if "rocksdb" in name or name.startswith("std::") or "libc" in name or "librocksdb" in name:
        return "#e15759"  # RocksDB, C/C++
    if "sluice" in name:
        return "#4e79a7"  # ours
    return "#edc948"  # crates (tokio, rustls, tracing, ...)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", default="flame graph")
    ap.add_argument("--min-width", type=float, default=1.0)
    ap.add_argument("--folded")
    ap.add_argument("--top", type=int, default=0)
    args = ap.parse_args()

    counts = defaultdict(int)
    for stack in fold(sys.stdin):
        counts[stack] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("flame.py: no samples on stdin")
    if args.folded:
        with open(args.folded, "w") as f:
            for stack, n in sorted(counts.items()):
                f.write(";".join(stack) + " %d\n" % n)
    if args.top:
        inclusive = defaultdict(int)
        for stack, n in counts.items():
            for name in set(stack):
                inclusive[name] += n
        for name, n in sorted(inclusive.items(), key=lambda x: -x[1])[: args.top]:
            print("%6.2f%%  %s" % (100.0 * n / total, name), file=sys.stderr)

    # A tree of frames: name -> [count, children].
    root = [0, {}]
    for stack, n in counts.items():
        node = root
        node[0] += n
        for name in stack:
            node = node[1].setdefault(name, [0, {}])
            node[0] += n
    boxes = []

    def walk(node, x, depth):
        for name, child in sorted(node[1].items()):
            w = child[0] * WIDTH / total
            if w >= args.min_width:
                boxes.append((x, depth, w, name, child[0]))
                walk(child, x, depth + 1)
            x += w

    walk(root, 0.0, 0)
    depth = max((b[1] for b in boxes), default=0) + 1
    height = depth * ROW + 40
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="monospace" font-size="11">'
        % (WIDTH, height),
        '<rect width="100%" height="100%" fill="#fdfdfd"/>',
        '<text x="4" y="16" font-size="14">%s (%d samples; hover a box for its share)</text>'
        % (escape(args.title), total),
    ]
    for x, d, w, name, n in boxes:
        y = height - (d + 1) * ROW - 4
        label = name if len(name) * 6.6 < w - 4 else name[: max(0, int((w - 4) / 6.6) - 2)] + ".."
        out.append(
            '<g><title>%s: %.2f%%</title><rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" stroke="#fff"/>'
            % (escape(name), 100.0 * n / total, x, y, w, ROW - 1, colour(name))
        )
        if w > 20:
            out.append('<text x="%.1f" y="%d">%s</text>' % (x + 2, y + ROW - 4, escape(label)))
        out.append("</g>")
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
