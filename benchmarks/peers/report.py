"""docs/performance.md from the medians of ``python -m benchmarks.peers`` (and its plot, drawn
by ``plot.py`` in the bench venv)."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DOC = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / "images" / "peers-amqp.png"

MODES = {"ptc": "produce, then consume", "concurrent": "concurrent", "latency": "latency"}

INTRO = """\
# Performance against the peers

`make bench-peers` (`python -m benchmarks.peers --docs`) runs rrjobs and its Python peers
side by side on one machine and writes this page. Each peer is installed into its own venv
(`benchmarks/peers/.venvs/<name>`) from the pinned `benchmarks/peers/requirements-<name>.txt`;
each run is a fresh process of that venv printing one JSON line; the orchestrator starts a
RabbitMQ of its own from the integration harness, runs every configuration round-robin
`--runs` times and takes medians. The raw lines are committed in `benchmarks/results/`.

**Workload**: ~100-byte JSON payloads (an index, the push time, padding), prefetch 100,
10 concurrent handlers that do nothing but count.

**Clocks**, the same for every system: *enqueue* runs from the first push to the last one
accepted (with publisher confirms, the last confirm); *consume* from the first job handled to
the last (a worker's start-up is outside it); *end to end* is `jobs / (enqueue + consume)`
when everything is produced first, and first push to last job handled when producer and
consumers run together. *Latency* is push to handler entry at a fixed offered load
(`time.monotonic`, one clock for every process of the machine). *Client CPU* is
`time.process_time` of the client process (all its threads) over the timed sections, plus
the Celery worker process's; *broker CPU* is the user + system time of RabbitMQ's process
group (the `beam.smp` VM and its helpers, read from `/proc`) over the whole run, start-up
and clean-up of the client included.

**Guarantees**: *equal* means publisher confirms on, the ack after the handler, persistent
messages on a durable queue. *default* is the peer's own defaults. rrjobs and taskiq
(taskiq-aio-pika) already confirm and ack after the handler by default, so they run once.
"""

CAVEATS = """\
## Where the comparison is not like for like

- **Producers.** rrjobs pushes with `push_batch` of 1,000 (one `await` per chunk); taskiq and
  FastStream have no batch publish, so they keep 1,000 publishes in flight with
  `asyncio.gather`; Dramatiq and Celery publish from a blocking client, one message at a time
  (with confirms on, each waits a round trip). This is how each library is meant to be used.
- **Concurrency.** rrjobs runs 10 workers, taskiq `max_async_tasks=10`, Dramatiq 10 worker
  threads, Celery `-P threads -c 10` (prefetch multiplier 10 = 100). FastStream has no limit of
  its own: up to prefetch (100) handlers run at once.
- **Processes.** Celery's worker is a separate process (its design); every other system
  produces and consumes in one process. Celery's client CPU adds both.
- **Acks.** Celery's default acks on receipt (before the handler); huey removes a task from
  its queue when a worker dequeues it (no ack after the handler).
- **Payload envelope.** Each system wraps the same body in its own envelope (task name,
  ids, headers), so the bytes on the wire differ.
- **Latency at 2,000 jobs/s.** A push is started every millisecond for the jobs then due;
  a blocking client (Dramatiq, Celery) that cannot keep up offers less: its *reached*
  column is what it managed. An asyncio client (rrjobs, FastStream, taskiq) starts every push
  on time; when the system cannot sustain the rate, the backlog grows and the latency with
  it (seconds), while a blocking client throttles itself and keeps its latency low: compare
  the reached rate first.
- **Memory.** taskiq's InMemoryBroker runs the task from `kiq()` in the producer's loop (no
  queue in between): only the concurrent mode means anything, and it is what both run.
- **SQLite durability.** Every system runs in WAL mode; the synchronous column is read
  back from the connection that enqueues. At `FULL`: rrjobs `synchronous: full`, huey
  `SqliteHuey(fsync=True)` (`PRAGMA synchronous=2`), persist-queue's
  `SQLiteAckQueue(auto_commit=True)` on SQLite's default (`full` in this build). At
  `NORMAL` (a commit survives a crash of the process, not of the OS): rrjobs
  `synchronous: normal`, huey with `PRAGMA synchronous=NORMAL` set on its connection (huey
  has no option for it). huey and persist-queue commit once per enqueued job, as rrjobs's
  one `await push()` at a time does (`sqlite-single`); 100 tasks pushing at once share
  commits (`sqlite-concurrent`, group commit); rrjobs's `sqlite` variant commits once per
  `push_batch`. A sequential producer at `FULL` waits one `fsync` per job on every system.
- **Noise.** The machine (2 cores) runs other work at the same time; the figures are medians
  of the runs stated below, and the ratios within one run of the suite matter more than the
  absolute numbers.
"""


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


#: rrjobs' AMQP end to end (produce then consume, equal guarantees) against the best peer
AMQP_TARGET = 2.0


def amqp_tables(table: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    rows = [m for m in table.values() if m["group"] == "amqp"]
    for mode in ("ptc", "concurrent"):
        out += [f"### RabbitMQ, {MODES[mode]}", "",
                "| system | guarantees | enqueue jobs/s | consume jobs/s | end to end jobs/s "
                "| client CPU-s / 1,000 | broker CPU-s / 1,000 | runs |",
                "|---|---|---|---|---|---|---|---|"]
        chosen = sorted((m for m in rows if m["mode"] == mode),
                        key=lambda m: -m.get("end_to_end_jobs_per_s", 0))
        for m in chosen:
            out.append(f"| {m['system']} | {m['guarantees']} | {fmt(m.get('enqueue_jobs_per_s'))} "
                       f"| {fmt(m.get('consume_jobs_per_s'))} "
                       f"| **{fmt(m.get('end_to_end_jobs_per_s'))}** "
                       f"| {fmt(m.get('client_cpu_s_per_1000'), 3)} "
                       f"| {fmt(m.get('broker_cpu_s_per_1000'), 3)} | {m['runs']} |")
        out.append("")
    lat = sorted((m for m in rows if m["mode"] == "latency"),
                 key=lambda m: m.get("latency_p99_ms", 0))
    if lat:
        out += ["### RabbitMQ, push-to-handle latency at an offered 2,000 jobs/s (equal "
                "guarantees)", "",
                "| system | reached jobs/s | p50 ms | p99 ms | client CPU-s / 1,000 | runs |",
                "|---|---|---|---|---|---|"]
        for m in lat:
            out.append(f"| {m['system']} | {fmt(m.get('enqueue_jobs_per_s'))} "
                       f"| {fmt(m.get('latency_p50_ms'), 1)} | {fmt(m.get('latency_p99_ms'), 1)} "
                       f"| {fmt(m.get('client_cpu_s_per_1000'), 3)} | {m['runs']} |")
        out.append("")
    equal = [m for m in rows if m["mode"] == "ptc" and m["guarantees"] == "equal"]
    ours = [m for m in equal if m["system"] == "rrjobs"]
    peers = [m for m in equal if m["system"] not in ("rrjobs", "floor")]
    floor = [m for m in equal if m["system"] == "floor"]
    if ours and peers:
        best = max(peers, key=lambda m: m["end_to_end_jobs_per_s"])
        ratio = ours[0]["end_to_end_jobs_per_s"] / best["end_to_end_jobs_per_s"]
        verdict = "met" if ratio >= AMQP_TARGET else "not met"
        out += [f"Produce-then-consume at equal guarantees: rrjobs end to end is **{ratio:.2f}x** "
                f"the best peer ({best['system']}); the target is {AMQP_TARGET:g}x: {verdict}.",
                ""]
        dd = [m for m in rows if m["mode"] == "ptc" and m["system"] == "dramatiq"
              and m["guarantees"] == "default"]
        if dd:
            r = ours[0]["end_to_end_jobs_per_s"] / dd[0]["end_to_end_jobs_per_s"]
            verdict = "met" if r >= 1 else "not met"
            out += [f"Against Dramatiq's default (no confirms): **{r:.2f}x** (the target is "
                    f"at least 1x: {verdict}).", ""]
        if floor:
            r = ours[0]["end_to_end_jobs_per_s"] / floor[0]["end_to_end_jobs_per_s"]
            out += [f"`floor` is not a peer: the same work as a minimal pamqp loop "
                    f"(`benchmarks/amqp_floor.py`: no runtime, no job objects; its publishes "
                    f"are encoded by pamqp, which rrjobs' are not); rrjobs end to end is "
                    f"**{r:.2f}x** the floor.", ""]
    return out


def local_tables(table: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for group, title in (("sqlite", "SQLite, produce then consume (WAL)"),
                         ("memory", "In memory, concurrent")):
        rows = sorted((m for m in table.values() if m["group"] == group),
                      key=lambda m: -m.get("end_to_end_jobs_per_s", 0))
        if not rows:
            continue
        sync = group == "sqlite"  # the synchronous column, read back from each system
        out += [f"### {title}", "",
                "| system | variant | " + ("synchronous | " if sync else "")
                + "enqueue jobs/s | consume jobs/s | end to end jobs/s | client CPU-s / 1,000 "
                "| jobs | runs |", "|---|---|---|---|---|---|---|---|" + ("---|" if sync else "")]
        for m in rows:
            variant = m["settings"].get("push") or m["settings"].get("storage") or m["variant"]
            setting = f" {m['settings'].get('synchronous', '-')} |" if sync else ""
            out.append(f"| {m['system']} | {variant} |{setting} {fmt(m.get('enqueue_jobs_per_s'))} "
                       f"| {fmt(m.get('consume_jobs_per_s'))} "
                       f"| **{fmt(m.get('end_to_end_jobs_per_s'))}** "
                       f"| {fmt(m.get('client_cpu_s_per_1000'), 3)} | {m['jobs']:,} "
                       f"| {m['runs']} |")
        out.append("")
    return out + memory_statement(table) + sqlite_statements(table)


def sqlite_statements(table: dict[str, dict[str, Any]]) -> list[str]:
    """The sqlite driver's targets against the durable local peers, each ratio taken at
    the same ``synchronous`` on both sides: one ``await push()`` per job >= 2x huey's
    enqueue, ``push_batch`` end to end >= 20x the best durable local peer."""
    sq = {m["variant"]: m for m in table.values() if m["group"] == "sqlite"}
    out: list[str] = []

    def enqueue_ratio(ours: str, peer: str, what: str) -> None:
        if ours in sq and peer in sq:
            r = sq[ours]["enqueue_jobs_per_s"] / sq[peer]["enqueue_jobs_per_s"]
            sync = sq[peer]["settings"].get("synchronous", "?")
            cpu = ""
            if sq[ours].get("enqueue_cpu_s_per_1000") and sq[peer].get("enqueue_cpu_s_per_1000"):
                c = sq[peer]["enqueue_cpu_s_per_1000"] / sq[ours]["enqueue_cpu_s_per_1000"]
                cpu = f"; CPU per job {c:.2f}x less"
            out.append(f"- {what} against huey's enqueue (one commit each), synchronous="
                       f"{sync.upper()} on both sides: **{r:.2f}x** (target: 2x{cpu}).")

    enqueue_ratio("sqlite-single", "huey", "One `await push()` per job, one task,")
    enqueue_ratio("sqlite-single-normal", "huey-normal", "One `await push()` per job, one task,")
    enqueue_ratio("sqlite-single-journal", "huey-normal", "One `await push()` per job, one task, "
                  "`push_journal: true`,")
    enqueue_ratio("sqlite-concurrent", "huey", "One `await push()` per job from 100 tasks "
                  "(group commit),")
    peers = [sq[k] for k in ("huey", "persistqueue") if k in sq]
    if "sqlite" in sq and peers:
        best = max(peers, key=lambda m: m["end_to_end_jobs_per_s"])
        r = sq["sqlite"]["end_to_end_jobs_per_s"] / best["end_to_end_jobs_per_s"]
        out.append(f"- `push_batch` end to end against the best durable local peer "
                   f"({best['system']}), synchronous=FULL on both sides: **{r:.1f}x** "
                   "(target: 20x).")
    return [*out, ""] if out else []


PROCESS_TARGETS = {"light": 1.4, "cpu": 1.8}


def processes_tables(table: dict[str, dict[str, Any]], cpus: int) -> list[str]:
    """``rrjobs serve --processes 1`` and ``2`` on RabbitMQ, and the 2/1 ratios against
    their targets (on a machine of ``cpus`` CPUs)."""
    rows = {(m["variant"], m["mode"]): m for m in table.values() if m["group"] == "processes"}
    if not rows:
        return []
    out = ["| handler | mode | processes | enqueue jobs/s | consume jobs/s | end to end jobs/s "
           "| client CPU-s / 1,000 | broker CPU-s / 1,000 | jobs | runs |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    ratios: list[str] = []
    for kind, handler in (("light", "JSON only"), ("cpu", "1 ms busy loop")):
        for mode in ("ptc", "concurrent"):
            for count in (1, 2):
                m = rows.get((f"p{count}-{kind}", mode))
                if m is not None:
                    out.append(f"| {handler} | {MODES[mode]} | {count} "
                               f"| {fmt(m.get('enqueue_jobs_per_s'))} "
                               f"| {fmt(m.get('consume_jobs_per_s'))} "
                               f"| **{fmt(m.get('end_to_end_jobs_per_s'))}** "
                               f"| {fmt(m.get('client_cpu_s_per_1000'), 3)} "
                               f"| {fmt(m.get('broker_cpu_s_per_1000'), 3)} | {m['jobs']:,} "
                               f"| {m['runs']} |")
            one, two = rows.get((f"p1-{kind}", mode)), rows.get((f"p2-{kind}", mode))
            if one and two and one.get("end_to_end_jobs_per_s") and one.get(
                    "consume_jobs_per_s"):
                ratios.append(process_ratios(handler, kind, mode, one, two, cpus))
    return [*out, "", *ratios, ""]


def ptc_ceiling(one: dict[str, Any]) -> float:
    """The end-to-end ratio of produce-then-consume if 2 processes consumed exactly twice
    as fast as ``one`` after the same enqueue (one producer in both runs): Amdahl's bound."""
    enqueue, consume = 1 / float(one["enqueue_jobs_per_s"]), 1 / float(one["consume_jobs_per_s"])
    return (enqueue + consume) / (enqueue + consume / 2)


def cpus_busy(one: dict[str, Any]) -> float | None:
    """CPUs a concurrent run kept busy on average: its client processes' and the broker's
    CPU-seconds per job times its end-to-end rate (the broker's CPU counts its whole run,
    start-up and clean-up of the client included, so this is a little high)."""
    client, broker = one.get("client_cpu_s_per_1000"), one.get("broker_cpu_s_per_1000")
    if client is None or broker is None:
        return None
    return (float(client) + float(broker)) / 1000 * float(one["end_to_end_jobs_per_s"])


def process_ratios(handler: str, kind: str, mode: str, one: dict[str, Any],
                   two: dict[str, Any], cpus: int) -> str:
    """2 processes / 1: consume (the primary figure: what the processes do), then end to
    end against its target, with produce-then-consume's bound, or in a concurrent run
    how many of the machine's CPUs 1 process already kept busy."""
    consume = two["consume_jobs_per_s"] / one["consume_jobs_per_s"]
    e2e = two["end_to_end_jobs_per_s"] / one["end_to_end_jobs_per_s"]
    target = PROCESS_TARGETS[kind]
    line = (f"- {handler}, {MODES[mode]}: 2 processes consume **{consume:.2f}x** as fast as "
            f"1; end to end {e2e:.2f}x (target {target:g}x: "
            f"{'met' if e2e >= target else 'not met'})")
    if mode == "ptc" and one.get("enqueue_jobs_per_s"):
        line += (f"; the enqueue is the same producer in both runs, so consuming exactly "
                 f"twice as fast would give end to end {ptc_ceiling(one):.2f}x at most")
    elif mode == "concurrent" and (busy := cpus_busy(one)):
        line += (f"; 1 process already kept {busy:.2f} of the {cpus} CPUs busy (its client "
                 f"processes and RabbitMQ), so at the same CPU per job 2 processes would "
                 f"fill them at about {cpus / busy:.2f}x")
    return line + "."


def memory_statement(table: dict[str, dict[str, Any]]) -> list[str]:
    """The memory driver against a bare ``asyncio.Queue`` loop run in the same process."""
    ours = [m for m in table.values() if m["group"] == "memory" and m["system"] == "rrjobs"
            and m.get("bare_queue_ratio") is not None]
    if not ours:
        return []
    m = ours[0]
    return [f"The memory driver end to end against a bare `asyncio.Queue` loop doing the same "
            f"work (the payloads, the chunks, a consumer task per handler, the same handler), "
            f"run after it in the same process: **{m['bare_queue_ratio']:.2f}x** "
            f"(the median of the runs' ratios; the bare loop "
            f"{fmt(m.get('bare_queue_jobs_per_s'))} jobs/s).", ""]


def write_docs(table: dict[str, dict[str, Any]], results: Path, machine: dict[str, Any],
               args: argparse.Namespace) -> None:
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(table, f)
    subprocess.run([str(HERE / ".venvs" / "bench" / "bin" / "python"), str(HERE / "plot.py"),
                    f.name, str(PLOT)], check=True)
    Path(f.name).unlink()
    rel = results.resolve().relative_to(REPO)
    parts = [INTRO,
             "## This run", "",
             f"- raw JSON lines: `{rel}`",
             f"- {args.runs} runs of each configuration, medians (the runs column: how many "
             f"each is of); {args.jobs:,} jobs per AMQP "
             f"and memory run, {args.local_jobs:,} per SQLite run, {args.latency_jobs:,} per "
             f"latency run at {args.rate:,.0f} jobs/s",
             f"- machine: {machine['cpus']} CPUs, {machine['platform']}, RabbitMQ "
             f"{machine['rabbitmq']}, load average at the start "
             f"{', '.join(f'{x:.1f}' for x in machine['loadavg_start'])}", "",
             "![End-to-end jobs/s on RabbitMQ](images/peers-amqp.png)", "",
             "## RabbitMQ", "", *amqp_tables(table),
             "## Local: SQLite and memory", "", *local_tables(table),
             "## Several processes: `rrjobs serve --processes N`", "",
             "One supervisor and N runtime processes consuming one RabbitMQ queue "
             "(each with 10 workers and prefetch 100; equal guarantees); the producer is "
             "the benchmark's own process (`run_processes.py`). The CPU-bound handler spins "
             f"1 ms; its runs have {args.cpu_jobs:,} jobs. Client CPU is the producer's "
             "over the enqueue plus each serve process's from its first job to its last. On "
             "a 2-core machine the processes share the cores with RabbitMQ and the "
             "producer: 2 processes can gain only what the broker's CPU per job leaves. "
             "The primary figure is the consume ratio (what the processes do); end to end "
             "also counts the enqueue, which is one producer process in both runs (in "
             "produce-then-consume the serve processes are paused meanwhile), so its ratio "
             "is bounded below the consume ratio (Amdahl; the bound is given with each "
             "ratio).", "",
             *processes_tables(table, int(machine["cpus"])),
             CAVEATS]
    DOC.write_text("\n".join(parts))
