#!/usr/bin/env python3
"""Summaries for scripts/bench-ab, from the bench command's JSON reports.

    bench_ab.py line ROUND LABEL < report.json     one run, on one line
    bench_ab.py medians RUNS LABEL...              each variant's medians; RUNS holds
                                                   "label<TAB>report" lines
"""
import json
import statistics
import sys

FIELDS = [
    ("msg/s", lambda r: r["end_to_end_per_second"], "{:.0f}"),
    ("p50 ms", lambda r: r["latency_ms_p50"], "{:.1f}"),
    ("p99 ms", lambda r: r["latency_ms_p99"], "{:.1f}"),
    ("machine", lambda r: r["cpu"]["machine_ms_per_message"], "{:.3f}"),
    ("steal", lambda r: r["cpu"]["steal_ms_per_message"], "{:.3f}"),
    ("postgres", lambda r: r["cpu"]["postgres_ms_per_message"], "{:.3f}"),
    ("service", lambda r: r["cpu"]["service_ms_per_message"], "{:.3f}"),
    ("pg+service", lambda r: r["cpu"]["postgres_ms_per_message"] + r["cpu"]["service_ms_per_message"], "{:.3f}"),
]


def line(round_, label):
    report = json.load(sys.stdin)
    cells = ", ".join(f"{name} {fmt.format(get(report))}" for name, get, fmt in FIELDS)
    print(f"round {round_} {label}: {cells}, lost {report['lost']}, duplicated {report['duplicated']}", flush=True)


def medians(path, labels):
    runs = {}
    with open(path) as f:
        for row in f:
            label, report = row.split("\t", 1)
            runs.setdefault(label, []).append(json.loads(report))
    print("\nmedians (latency: enqueue to provider request; CPU: ms per message, steal apart)")
    print(f"{'':>12} {'runs':>4} " + " ".join(f"{name:>10}" for name, _, _ in FIELDS) + "  lost+dup")
    for label in labels:
        mine = runs.get(label, [])
        cells = [fmt.format(statistics.median(get(r) for r in mine)) if mine else "-" for _, get, fmt in FIELDS]
        faults = sum(r["lost"] + r["duplicated"] for r in mine)
        print(f"{label:>12} {len(mine):>4} " + " ".join(f"{c:>10}" for c in cells) + f"  {faults}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["line"] and len(sys.argv) == 4:
        line(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["medians"] and len(sys.argv) >= 3:
        medians(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
