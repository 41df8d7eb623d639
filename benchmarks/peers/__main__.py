"""``python -m benchmarks.peers``: rrjobs side by side with its Python peers.

Installs each peer into its own venv (``benchmarks/peers/.venvs/<name>``, from the pinned
``requirements-<name>.txt``, reinstalled only when that file changes), starts a RabbitMQ of
its own from the integration harness (``--use-env``: the one in ``RRJOBS_AMQP_URL``), runs
every configuration ``--runs`` times round-robin, each run a fresh process of the system's
venv printing one JSON line, and writes the raw lines (plus the broker's CPU over the run) to
``--results``, the medians to ``docs/performance.md`` and its plot. ``--small``: the CI
form (few jobs, one run, a subset of the peers, nothing written to docs/).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENVS = HERE / ".venvs"
PEER_VENVS = ("taskiq", "faststream", "dramatiq", "celery", "local", "bench")
#: The peers the CI's small form installs and runs (docs/decisions.md: all of them do not
#: install within its three minutes on a clean machine).
SMALL_VENVS = ("dramatiq", "local")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    system: str
    venv: str  # "" = the project's own venv (rrjobs)
    script: str
    variant: str
    mode: str
    guarantees: str
    group: str  # amqp, sqlite, memory

    @property
    def key(self) -> str:
        return "/".join((self.group, self.system, self.variant, self.guarantees, self.mode))


def amqp_configs() -> Iterator[Config]:
    # (system, venv, script, variant, guarantees): rrjobs's and taskiq's defaults are the
    # equal guarantees already, so they run once.
    peers = [("rrjobs", "", "run_rrjobs.py", "amqp", ("equal",)),
             ("taskiq", "taskiq", "run_taskiq.py", "amqp", ("equal",)),
             ("faststream", "faststream", "run_faststream.py", "", ("default", "equal")),
             ("dramatiq", "dramatiq", "run_dramatiq.py", "", ("default", "equal")),
             ("celery", "celery", "run_celery.py", "", ("default", "equal"))]
    for system, venv, script, variant, guarantees in peers:
        for g in guarantees:
            modes = ("ptc", "concurrent", "latency") if g == "equal" else ("ptc", "concurrent")
            for mode in modes:
                yield Config(system, venv, script, variant, mode, g, "amqp")
    # not a peer: the same work as a minimal pamqp loop (run_floor.py; not in --small)
    yield Config("floor", "", "run_floor.py", "", "ptc", "equal", "amqp")


def local_configs() -> Iterator[Config]:
    # synchronous=FULL on both sides, then NORMAL on both sides (huey-normal; rrjobs with
    # and without push_journal)
    for variant in ("sqlite", "sqlite-single", "sqlite-concurrent", "sqlite-single-normal",
                    "sqlite-single-journal"):
        yield Config("rrjobs", "", "run_rrjobs.py", variant, "ptc", "equal", "sqlite")
    for variant in ("huey", "huey-normal", "persistqueue"):
        system = variant.partition("-")[0]
        yield Config(system, "local", "run_local.py", variant, "ptc", "equal", "sqlite")
    yield Config("rrjobs", "", "run_rrjobs.py", "memory", "concurrent", "equal", "memory")
    yield Config("taskiq", "taskiq", "run_taskiq.py", "memory", "concurrent", "equal", "memory")


def processes_configs() -> Iterator[Config]:
    """``rrjobs serve --processes 1`` and ``2`` on RabbitMQ, with a CPU-light handler and
    one spinning 1 ms (run_processes.py): the 2-process / 1-process ratios."""
    for kind in ("light", "cpu"):
        for mode in ("ptc", "concurrent"):
            for count in (1, 2):
                yield Config("rrjobs", "", "run_processes.py", f"p{count}-{kind}", mode,
                             "equal", "processes")


def python_of(venv: str) -> str:
    if not venv:
        return sys.executable
    return str(VENVS / venv / "bin" / "python")


def requirements_hash(name: str) -> str:
    return hashlib.sha256((HERE / f"requirements-{name}.txt").read_bytes()).hexdigest()


def ensure_venv(name: str) -> str:
    """Create or refresh ``.venvs/<name>``; returns what was done."""
    venv, stamp = VENVS / name, VENVS / name / ".requirements-sha256"
    digest = requirements_hash(name)
    if stamp.exists() and stamp.read_text().strip() == digest:
        return f"{name}: cached"
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-r", str(HERE / f"requirements-{name}.txt")], check=True)
    stamp.write_text(digest + "\n")
    return f"{name}: installed in {time.monotonic() - began:.0f}s"


def ensure_venvs(names: tuple[str, ...]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:
        for line in pool.map(ensure_venv, names):
            print(f"[peers] venv {line}", file=sys.stderr)


def group_cpu(pgid: int | None) -> float | None:
    """CPU-seconds (user + system) of the broker's process group so far, from /proc."""
    if pgid is None:
        return None
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp (fields[0] is field 3, state)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def run_one(cfg: Config, args: argparse.Namespace, url: str, pgid: int | None,
            workdir: str) -> dict[str, Any]:
    jobs = args.latency_jobs if cfg.mode == "latency" else args.jobs
    if cfg.group == "sqlite":
        jobs = args.local_jobs
    if cfg.group == "processes" and cfg.variant.endswith("-cpu"):
        jobs = args.cpu_jobs
    cmd = [python_of(cfg.venv), str(HERE / cfg.script), "--url", url, "--jobs", str(jobs),
           "--mode", cfg.mode, "--guarantees", cfg.guarantees, "--rate", str(args.rate),
           "--prefetch", "100", "--concurrency", "10", "--dir", workdir]
    if cfg.variant:
        cmd += ["--variant", cfg.variant]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    on_amqp = cfg.group in ("amqp", "processes")
    before = group_cpu(pgid) if on_amqp else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    after = group_cpu(pgid) if on_amqp else None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"[peers] {cfg.key} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line: dict[str, Any] = json.loads(lines[-1])
    line["key"] = cfg.key
    line["group"] = cfg.group
    if before is not None and after is not None:
        line["broker_cpu_s"] = after - before
        line["broker_cpu_s_per_1000"] = (after - before) * 1000 / jobs
    return line


FIELDS = ("enqueue_jobs_per_s", "consume_jobs_per_s", "end_to_end_jobs_per_s",
          "client_cpu_s_per_1000", "enqueue_cpu_s_per_1000", "broker_cpu_s_per_1000",
          "latency_p50_ms", "latency_p99_ms", "bare_queue_jobs_per_s", "bare_queue_ratio")


def medians(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_key.setdefault(line["key"], []).append(line)
    out: dict[str, dict[str, Any]] = {}
    for key, runs in by_key.items():
        m: dict[str, Any] = {k: runs[0][k] for k in ("system", "variant", "mode", "guarantees",
                                                      "group", "jobs", "settings")}
        m["runs"] = len(runs)
        for f in FIELDS:
            values = [r[f] for r in runs if r.get(f) is not None]
            if values:
                m[f] = statistics.median(values)
        out[key] = m
    return out


def report_only(results: Path, args: argparse.Namespace) -> int:
    """Write docs/performance.md from an earlier run's lines (its counts read from them)."""
    from benchmarks.peers.report import write_docs

    lines = [json.loads(raw) for raw in results.read_text().splitlines() if raw.strip()]
    jobs = {line["mode"] if line["group"] != "sqlite" else "sqlite": line["jobs"]
            for line in lines if line["group"] != "processes"}
    args.runs = max(line["run"] for line in lines) + 1
    args.jobs = jobs.get("ptc", jobs.get("concurrent", args.jobs))
    args.local_jobs = jobs.get("sqlite", args.local_jobs)
    args.latency_jobs = jobs.get("latency", args.latency_jobs)
    args.cpu_jobs = next((ln["jobs"] for ln in lines if ln["group"] == "processes"
                          and ln["variant"].endswith("-cpu")), args.cpu_jobs)
    args.rate = next((ln["offered_jobs_per_s"] for ln in lines if ln["mode"] == "latency"),
                     args.rate)
    write_docs(medians(lines), results, lines[0]["machine"], args)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs of the AMQP and memory runs")
    p.add_argument("--local-jobs", type=int, default=20_000, help="jobs of the sqlite runs")
    p.add_argument("--latency-jobs", type=int, default=10_000,
                   help="jobs of a latency run (at --rate per second)")
    p.add_argument("--cpu-jobs", type=int, default=5_000,
                   help="jobs of a --processes run with the 1 ms CPU-bound handler")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated systems (default: all)")
    p.add_argument("--groups", default="", help="comma-separated groups: amqp, sqlite, "
                   "memory, processes (default: all)")
    p.add_argument("--small", action="store_true",
                   help="CI form: 300 jobs, one run, rrjobs + " + ", ".join(SMALL_VENVS))
    p.add_argument("--results", default="", help="raw JSON lines (default: "
                   "benchmarks/results/peers-<date>.jsonl; with --small: a temp file)")
    p.add_argument("--docs", action="store_true", help="write docs/performance.md and the plot")
    p.add_argument("--use-env", action="store_true",
                   help="the RabbitMQ in RRJOBS_AMQP_URL (broker CPU is then not measured)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--report", default="", metavar="JSONL",
                   help="no runs: docs/performance.md from the raw lines of an earlier run")
    args = p.parse_args(argv)
    if args.report:
        return report_only(Path(args.report), args)
    # a stop (SIGTERM) runs the finally below, which stops the broker this run started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    venvs = SMALL_VENVS if args.small else PEER_VENVS
    if args.small:
        args.jobs, args.local_jobs, args.latency_jobs, args.runs = 300, 200, 200, 1
        args.cpu_jobs = 100
    ensure_venvs(venvs)
    configs = [c for c in [*amqp_configs(), *local_configs(), *processes_configs()]
               if (not c.venv or c.venv in venvs) and not (args.small and c.system == "floor")
               and (not args.only or c.system in args.only.split(","))
               and (not args.groups or c.group in args.groups.split(","))]
    sys.path.insert(0, str(REPO))
    from integration.brokers.provider import acquire

    handle = acquire("amqp", use_env=args.use_env)
    broker = handle.broker
    pgid = broker.pgid if broker.provider == "local" else None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.results:
        results = Path(args.results)
    elif args.small:
        results = Path(tempfile.mkdtemp(prefix="peers-")) / "peers-small.jsonl"
    else:
        results = REPO / "benchmarks" / "results" / f"peers-{stamp}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "rabbitmq": broker.version, "loadavg_start": os.getloadavg()}
    lines: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="peers-") as workdir, results.open("w") as out:
            for run in range(args.runs):
                for cfg in configs:
                    line = run_one(cfg, args, broker.endpoint, pgid, workdir)
                    line["run"] = run
                    line["machine"] = machine
                    lines.append(line)
                    out.write(json.dumps(line, sort_keys=True) + "\n")
                    out.flush()
                    print(f"[peers] run {run + 1}/{args.runs} {cfg.key}: "
                          f"{line['end_to_end_jobs_per_s']:,.0f} jobs/s end to end",
                          file=sys.stderr)
    finally:
        handle.stop()
    print(f"[peers] raw JSON lines: {results}", file=sys.stderr)
    table = medians(lines)
    if args.docs:
        from benchmarks.peers.report import write_docs

        write_docs(table, results, machine, args)
    print(json.dumps({"results": str(results), "medians": table}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
