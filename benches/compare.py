#!/usr/bin/env python3
"""Prints each criterion benchmark's median time per element and its ratio to baselines.

Reads target/criterion/<group>/<id>/new/{benchmark.json,estimates.json} for every group (or
only the groups named on the command line), and prints, per group, one row per contender:
the median ns per element (per hop, per event...: the group's Throughput::Elements), the
median's 95% confidence interval, and the ratio of that median to each baseline present in
the group (default baselines: floor-level, floor-edge, mio). Contenders are listed fastest
first. Without a Throughput, "per element" is per iteration.

Usage:
    python3 benches/compare.py [GROUP ...] [--dir target/criterion]
                               [--baseline floor-level,floor-edge,mio] [--markdown]
"""

import argparse
import json
import os
import sys

DEFAULT_BASELINES = "floor-level,floor-edge,mio"


def load_group(group_dir):
    """[(id, median_ns_per_elem, lo, hi)] for the benchmarks of one group directory."""
    rows = []
    for entry in sorted(os.listdir(group_dir)):
        new = os.path.join(group_dir, entry, "new")
        bench_json = os.path.join(new, "benchmark.json")
        est_json = os.path.join(new, "estimates.json")
        if not (os.path.isfile(bench_json) and os.path.isfile(est_json)):
            continue
        with open(bench_json) as f:
            bench = json.load(f)
        with open(est_json) as f:
            est = json.load(f)
        elems = 1
        tp = bench.get("throughput") or {}
        for key in ("Elements", "Bytes", "BytesDecimal", "Bits"):
            if key in tp:
                elems = tp[key]
                break
        med = est["median"]
        ci = med["confidence_interval"]
        ident = bench.get("function_id") or bench.get("value_str") or entry
        if bench.get("function_id") and bench.get("value_str"):
            ident = f"{bench['function_id']}/{bench['value_str']}"
        rows.append(
            (
                ident,
                med["point_estimate"] / elems,
                ci["lower_bound"] / elems,
                ci["upper_bound"] / elems,
            )
        )
    return rows


def print_group(name, rows, baselines, markdown):
    by_id = {r[0]: r[1] for r in rows}
    present = [b for b in baselines if b in by_id]
    head = ["contender", "ns/elem (median)", "95% CI"] + [f"x {b}" for b in present]
    table = []
    for ident, med, lo, hi in sorted(rows, key=lambda r: r[1]):
        cells = [ident, f"{med:.1f}", f"{lo:.1f}..{hi:.1f}"]
        cells += [f"{med / by_id[b]:.3f}" for b in present]
        table.append(cells)
    print(f"## {name}" if markdown else f"== {name} ==")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for cells in table:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(row[i]) for row in [head] + table) for i in range(len(head))]
        for row in [head] + table:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(row, widths))))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", help="group names (default: all)")
    ap.add_argument("--dir", default=None, help="criterion output dir")
    ap.add_argument("--baseline", default=DEFAULT_BASELINES,
                    help="comma-separated baseline ids (default: %(default)s)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = ap.parse_args()

    root = args.dir
    if root is None:
        here = os.path.dirname(os.path.abspath(__file__))
        root = os.path.join(here, "..", "target", "criterion")
    if not os.path.isdir(root):
        sys.exit(f"no criterion output at {root}: run `cargo bench` first")
    groups = args.groups or sorted(
        g for g in os.listdir(root)
        if g != "report" and os.path.isdir(os.path.join(root, g))
    )
    baselines = [b for b in args.baseline.split(",") if b]
    shown = 0
    for g in groups:
        gdir = os.path.join(root, g)
        if not os.path.isdir(gdir):
            print(f"(no group {g!r} under {root})", file=sys.stderr)
            continue
        rows = load_group(gdir)
        if rows:
            print_group(g, rows, baselines, args.markdown)
            shown += 1
    if shown == 0:
        sys.exit("no benchmark results found")


if __name__ == "__main__":
    main()
