"""Compare ``rrjobs bench`` of two checkouts, runs alternating, and print medians.

Each side is a checkout's own interpreter (its venv's ``python``, with that
checkout installed in it). The bench runs in a fresh process per run, the two
sides taking turns (before, after, after, before, ...: neither side always goes
first), so that the load of a shared machine falls on both alike::

    git worktree add --detach ../before <commit> && (cd ../before && make .venv/.dev)
    python benchmarks/compare_commits.py --before ../before/.venv/bin/python \\
        --after .venv/bin/python --rounds 3 --out kafka.jsonl -- \\
        --driver kafka --jobs 30000

Everything after ``--`` goes to ``rrjobs bench`` of both sides unchanged
(``--json`` is added); a broker comes from the driver's ``RRJOBS_*`` variable as
usual, so both sides use the same one. Each run is kept as a JSON line in
``--out`` (side, commit, load average, the bench's result, or its error), and
the end prints, per side, the median and range of the ratio, of rrjobs jobs/s,
of the baseline's items/s, of rrjobs jobs per CPU-second (this process's CPU
time) and of the CPU ratio (rrjobs jobs per CPU-second over the baseline's),
over every timed run, and the after/before change of the medians. ``--summarise FILE...`` prints
that table again from saved lines (``--markdown``: one table row per file).
The bench processes run at ``--nice`` (default 19).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from runs import run_once

SIDES = ("before", "after")


def checkout_commit(python: str) -> str:
    """The commit (short hash, ``+dirty`` if modified) of the checkout ``python`` imports."""
    where = subprocess.run(
        [python, "-c", "import rrjobs, os; print(os.path.dirname(rrjobs.__file__))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", where, *args], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", ".") else "")


def order(rounds: int) -> list[str]:
    """before, after, after, before, ...: ``rounds`` runs of each side."""
    return [side for i in range(rounds) for side in (SIDES if i % 2 == 0 else SIDES[::-1])]


def run_side(side: str, python: str, commit: str, bench_args: list[str],
             nice: int) -> dict[str, Any]:
    line: dict[str, Any] = {"side": side, "python": python, "commit": commit,
                            "load_before": os.getloadavg()[0]}
    try:
        line["result"] = run_once(bench_args, python=python, nice=nice)
    except subprocess.CalledProcessError as exc:
        line["error"] = (exc.stderr or exc.stdout or f"exit {exc.returncode}").strip()[-2000:]
    line["load_after"] = os.getloadavg()[0]
    return line


def _median_range(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})")


def _change(before: Sequence[float], after: Sequence[float]) -> str:
    if not before or not after:
        return "-"
    return f"{statistics.median(after) / statistics.median(before) - 1:+.1%}"


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tied
    values share their mean rank): how likely two samples this far apart are if
    both sides are one distribution. ``None`` with fewer than 3 values a side."""
    n1, n2 = len(a), len(b)
    if n1 < 3 or n2 < 3:
        return None
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        ours = sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        rank_sum += ours * ((i + j) / 2 + 1)  # ranks i+1..j+1 share their mean
        i = j + 1
    u = rank_sum - n1 * (n1 + 1) / 2
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return math.erfc(abs(u - n1 * n2 / 2) / sd / math.sqrt(2))


def _p(before: Sequence[float], after: Sequence[float]) -> str:
    p = mann_whitney_p(before, after)
    return "-" if p is None else f"{p:.2g}"


def side_figures(lines: Iterable[dict[str, Any]], side: str) -> dict[str, Any]:
    """Every timed run of ``side`` (a process's ``--repeat`` runs each count)."""
    mine = [ln for ln in lines if ln["side"] == side]
    runs = [r for ln in mine if "result" in ln for r in ln["result"]["runs"]]
    loads = [ln[k] for ln in mine for k in ("load_before", "load_after")]
    return {
        "commit": mine[0]["commit"] if mine else "-",
        "processes": len(mine),
        "failed": sum("error" in ln for ln in mine),
        # a driver without a baseline (sqlite: measured against its peers) has no ratio
        "ratio": [r["ratio"] for r in runs if r.get("ratio") is not None],
        "jobs_per_s": [r["jobs_per_s"] for r in runs],
        "baseline": [r["baseline_jobs_per_s"] for r in runs
                     if r.get("baseline_jobs_per_s") is not None],
        "cpu": [r["jobs_per_cpu_s"] for r in runs],
        "cpu_ratio": [r["jobs_per_cpu_s"] / r["baseline_jobs_per_cpu_s"] for r in runs
                      if r.get("baseline_jobs_per_cpu_s")],
        "load": loads,
    }


def summarise(lines: list[dict[str, Any]]) -> str:
    before, after = (side_figures(lines, s) for s in SIDES)
    first = next((ln["result"] for ln in lines if "result" in ln), None)
    head = "no successful run" if first is None else (
        f"{first['driver']}: {first['jobs']:,} jobs, workers={first['workers']} "
        f"batch={first['batch']} push={first['push']}, repeat={first['repeat']} per process; "
        f"Python {first['python']}, {first['cpu_count']} CPUs")
    load = before["load"] + after["load"]
    out = [head, f"load average (1 min) during the runs: "
                 f"{min(load, default=0):.1f}-{max(load, default=0):.1f}"]
    out.append(f"{'':<8} {'commit':<14} {'runs':>5} {'failed':>6}  {'ratio median (range)':<24} "
               f"{'jobs/s median (range)':<28} {'baseline/s median (range)':<28} "
               f"{'jobs/CPU-s median (range)':<28} CPU ratio")
    for side, fig in zip(SIDES, (before, after), strict=True):
        out.append(
            f"{side:<8} {fig['commit']:<14} {len(fig['ratio']):>5} {fig['failed']:>6}  "
            f"{_median_range(fig['ratio'], '.3f'):<24} "
            f"{_median_range(fig['jobs_per_s'], ',.0f'):<28} "
            f"{_median_range(fig['baseline'], ',.0f'):<28} "
            f"{_median_range(fig['cpu'], ',.0f'):<28} "
            f"{_median_range(fig['cpu_ratio'], '.3f')}")
    out.append(
        f"after/before (medians): ratio {_change(before['ratio'], after['ratio'])} "
        f"(p={_p(before['ratio'], after['ratio'])}), "
        f"jobs/s {_change(before['jobs_per_s'], after['jobs_per_s'])}, "
        f"baseline {_change(before['baseline'], after['baseline'])}, "
        f"jobs/CPU-s {_change(before['cpu'], after['cpu'])} "
        f"(p={_p(before['cpu'], after['cpu'])}), "
        f"CPU ratio {_change(before['cpu_ratio'], after['cpu_ratio'])} "
        f"(p={_p(before['cpu_ratio'], after['cpu_ratio'])}); "
        "p: two-sided Mann-Whitney U over the timed runs")
    return "\n".join(out)


MARKDOWN_HEAD = (
    "| driver | jobs, runs | ratio before | ratio after | change (p) "
    "| jobs/s before | jobs/s after | jobs/CPU-s before | jobs/CPU-s after | change (p) "
    "| CPU ratio before | CPU ratio after | load |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown_row(lines: list[dict[str, Any]]) -> str:
    """One row of :data:`MARKDOWN_HEAD`: medians with (min-max); p of each change."""
    before, after = (side_figures(lines, s) for s in SIDES)
    first = next((ln["result"] for ln in lines if "result" in ln), {"driver": "?", "jobs": 0})
    load = before["load"] + after["load"]
    return (
        f"| {first['driver']} | {first['jobs']:,}, {len(before['ratio'])}/{len(after['ratio'])} "
        f"| {_median_range(before['ratio'], '.3f')} | {_median_range(after['ratio'], '.3f')} "
        f"| {_change(before['ratio'], after['ratio'])} ({_p(before['ratio'], after['ratio'])}) "
        f"| {_median_range(before['jobs_per_s'], ',.0f')} "
        f"| {_median_range(after['jobs_per_s'], ',.0f')} "
        f"| {_median_range(before['cpu'], ',.0f')} | {_median_range(after['cpu'], ',.0f')} "
        f"| {_change(before['cpu'], after['cpu'])} ({_p(before['cpu'], after['cpu'])}) "
        f"| {_median_range(before['cpu_ratio'], '.3f')} "
        f"| {_median_range(after['cpu_ratio'], '.3f')} "
        f"| {min(load, default=0):.1f}-{max(load, default=0):.1f} |"
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the python of the 'before' checkout's venv")
    parser.add_argument("--after", default=sys.executable,
                        help="the python of the 'after' checkout's venv [default: this one]")
    parser.add_argument("--rounds", type=int, default=3, help="bench processes per side")
    parser.add_argument("--nice", type=int, default=19, help="niceness of the bench processes")
    parser.add_argument("--out", type=Path, help="append each run as a JSON line here")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="FILE",
                        help="print the summary of saved --out files instead of running")
    parser.add_argument("--markdown", action="store_true",
                        help="with --summarise: one markdown table row per file")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="-- then the arguments of rrjobs bench")
    args = parser.parse_args()
    if args.summarise:
        if args.markdown:
            print(MARKDOWN_HEAD)
        for path in args.summarise:
            lines = read_lines(path)
            print(markdown_row(lines) if args.markdown else summarise(lines))
        return
    if not args.before:
        parser.error("--before is required (unless --summarise)")
    bench_args = [a for a in args.bench_args if a != "--"] or ["--driver", "memory"]
    pythons = {"before": args.before, "after": args.after}
    commits = {side: checkout_commit(py) for side, py in pythons.items()}
    lines = []
    for i, side in enumerate(order(args.rounds)):
        line = run_side(side, pythons[side], commits[side], bench_args, args.nice)
        lines.append(line)
        if args.out is not None:
            with args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        if "error" in line:
            print(f"run {i + 1} {side:<6} FAILED: {line['error'].splitlines()[-1]}", flush=True)
        else:
            res = line["result"]
            base = ("no baseline" if res["ratio"] is None else
                    f"baseline {res['baseline_jobs_per_s']:>9,}/s, ratio {res['ratio']:.3f}")
            print(f"run {i + 1} {side:<6} {res['jobs_per_s']:>9,} jobs/s, {base} "
                  f"(load {line['load_before']:.1f})", flush=True)
    print(summarise(lines))
    if any("error" in ln for ln in lines):
        sys.exit(1)


if __name__ == "__main__":
    main()
