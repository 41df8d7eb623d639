"""Run ``rrjobs bench`` several times, each in a fresh process, and summarise.

On a shared machine one run says little: this runs the bench ``--runs`` times
(each with its own ``--repeat``), keeps every result as a JSON line, and prints
the median and the best over all timed runs::

    python benchmarks/runs.py --runs 5 --out memory.jsonl -- \\
        --driver memory --jobs 200000 --workers 2 --repeat 3

Everything after ``--`` goes to ``rrjobs bench`` unchanged (``--json`` is
added). The processes run one after another, never in parallel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_once(bench_args: list[str], python: str = sys.executable,
             nice: int = 0) -> dict[str, Any]:
    """One ``rrjobs bench --json`` in a fresh ``python`` process (``nice``: its niceness)."""
    cmd = [python, "-m", "rrjobs.bench", *bench_args, "--json"]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def summarise(results: list[dict[str, Any]]) -> str:
    runs = [r for res in results for r in res["runs"]]
    rate = [r["jobs_per_s"] for r in runs]
    base = [r["baseline_jobs_per_s"] for r in runs]
    ratio = [r["ratio"] for r in runs]
    cpu = [r["jobs_per_cpu_s"] for r in runs]
    first = results[0]
    lines = [
        f"{first['driver']}: {len(results)} processes x {first['repeat']} repeats = "
        f"{len(runs)} timed runs of {first['jobs']:,} jobs "
        f"(workers={first['workers']} batch={first['batch']} push={first['push']}"
        f"{' gc-freeze' if first.get('gc_freeze') else ''}); "
        f"Python {first['python']}, {first['cpu_count']} CPUs",
        f"  rrjobs jobs/s     median {statistics.median(rate):>10,.0f}   best {max(rate):>10,}",
        f"  baseline items/s  median {statistics.median(base):>10,.0f}   best {max(base):>10,}",
        f"  ratio (per run)   median {statistics.median(ratio):>10.3f}   best {max(ratio):>10.3f}",
        f"  rrjobs jobs/CPU-s median {statistics.median(cpu):>10,.0f}   best {max(cpu):>10,}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="bench processes to run")
    parser.add_argument("--out", type=Path, help="append each result as a JSON line here")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="-- then the arguments of rrjobs bench")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"] or ["--driver", "memory"]
    results = []
    for i in range(args.runs):
        result = run_once(bench_args)
        results.append(result)
        if args.out is not None:
            with args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
        print(f"run {i + 1}: {result['jobs_per_s']:,} jobs/s, baseline "
              f"{result['baseline_jobs_per_s']:,}/s, ratio {result['ratio']:.3f}", flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
