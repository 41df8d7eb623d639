"""rrjobs demo: a server, a batch of jobs, a live view, a graceful stop.

Run from the repository root (``make demo`` does)::

    .venv/bin/python examples/demo/run.py            # about 10 s
    .venv/bin/python examples/demo/run.py --quick    # a few seconds, fewer jobs

What it does:

1. starts ``rrjobs serve -c examples/demo/rrjobs.yaml`` as a subprocess (on a
   free port unless ``--rpc`` is given) and waits until it is ready;
2. pushes one batch of jobs through the RPC client: emails (mixed priorities,
   some delayed), images (blocking handlers in threads), webhooks that fail and
   succeed on retry, webhooks that always fail and end in the ``failed``
   dead-letter pipeline;
3. declares a ``reports`` pipeline at run time, pushes to it, shows it holds
   the jobs (it is not in ``jobs.consume``), then resumes it;
4. shows a live view of ``Stat`` until every job has settled;
5. prints the final ``rrjobs stat`` table, checks every counter against what
   the batch must produce, and stops the server with SIGTERM (exit code 0).

It exits 1 if anything is off (a job missing, a counter wrong, the server not
stopping cleanly) and prints what.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rrjobs import Config, Message
from rrjobs.cli import print_stats
from rrjobs.rpc import RPCClient
from rrjobs.runtime.jobs import PipelineStat

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "rrjobs.yaml"
DEAD_LETTER = "failed"
DECLARED = "reports"
SURVIVOR_ID = "survivor-0001"
SURVIVOR_JOB = "email.send"
COUNTERS = ("pushed", "ok", "failed", "retried", "dead_lettered", "dropped")
LISTENING = re.compile(r"RPC listening on (\S+)")

console = Console(highlight=False, soft_wrap=True)


# -- what the demo pushes and what it must produce -----------------------------------------


@dataclass
class Expect:
    """The final counters and queue sizes of one pipeline."""

    pushed: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    active: int = 0  # jobs left waiting at the end (only the dead-letter pipeline)


@dataclass
class Plan:
    batch: list[Message] = field(default_factory=list)
    declared: list[Message] = field(default_factory=list)
    expect: dict[str, Expect] = field(default_factory=dict)

    def add(self, msg: Message, *, failures: int = 0, dead: bool = False,
            max_attempts: int = 3) -> None:
        target = self.declared if msg.pipeline == DECLARED else self.batch
        target.append(msg)
        e = self.expect.setdefault(msg.pipeline, Expect())
        e.pushed += 1
        if dead:
            e.failed += max_attempts
            e.retried += max_attempts - 1
            e.dead_lettered += 1
            dl = self.expect.setdefault(DEAD_LETTER, Expect())
            dl.pushed += 1
            dl.active += 1
        else:
            e.ok += 1
            e.failed += failures
            e.retried += failures

    @property
    def total(self) -> int:
        return len(self.batch) + len(self.declared)


def job(pipeline: str, name: str, data: dict[str, Any], *, priority: int = 0,
        delay: float = 0.0) -> Message:
    return Message(name=name, payload=json.dumps(data).encode(), pipeline=pipeline,
                   priority=priority, delay=delay, headers={"demo": ["rrjobs"]})


def build_plan(quick: bool) -> Plan:
    plan = Plan()
    n_email, n_delayed, n_image, n_hook, n_broken, n_report = (
        (8, 2, 3, 3, 1, 2) if quick else (40, 10, 12, 10, 3, 8))
    delay_step = 0.3 if quick else 1.2
    image_ms = 120 if quick else 700
    email_ms = 20 if quick else 120
    for i in range(n_email):
        delayed = i < n_delayed
        plan.add(job("emails", "email.send", {"to": f"user{i}@example.com", "ms": email_ms},
                     priority=1 + i % 3, delay=(1 + i % 3) * delay_step if delayed else 0))
    for i in range(n_image):
        plan.add(job("images", "image.resize", {"image": f"photo-{i}.jpg", "ms": image_ms}))
    for i in range(n_hook):
        fail_times = i % 3  # 0, 1 or 2 failures before success (max_attempts is 3)
        plan.add(job("webhooks", "webhook.call",
                     {"url": f"https://hooks.example.com/{i}", "fail_times": fail_times}),
                 failures=fail_times)
    for i in range(n_broken):
        plan.add(job("webhooks", "webhook.broken", {"url": f"https://gone.example.com/{i}"}),
                 dead=True)
    for i in range(n_report):
        plan.add(job(DECLARED, "report.build", {"report": f"q{i + 1}", "ms": 150}))
    return plan


# -- the server process ---------------------------------------------------------------------


class ServerProcess:
    """``rrjobs serve`` as a subprocess, its log in a file."""

    def __init__(self, rpc: str, workdir: Path, log_name: str = "server.log") -> None:
        self.log_path = workdir / log_name
        self.cmd = [sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(CONFIG),
                    "--rpc", rpc, "--log-level", "info"]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=workdir)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_ready(self, within: float) -> str:
        """Wait for the "RPC listening on" line and a 200 from /health; return the address."""
        deadline = time.monotonic() + within
        address = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}")
            if not address:
                m = LISTENING.search(self.log_text())
                address = m.group(1) if m else ""
            if address:
                async with RPCClient(address, timeout=2) as client:
                    try:
                        if await client.health():
                            return address
                    except Exception:
                        pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the server was not ready within {within:g}s")

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code
        (``None`` if it had to be killed)."""
        code: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
        else:
            code = self.proc.returncode
        self._log.close()
        return code


# -- the live view --------------------------------------------------------------------------


def settled(s: PipelineStat) -> int:
    c = s.counters
    return c.ok + c.dead_lettered + c.dropped


def is_done(stats: list[PipelineStat], plan: Plan) -> bool:
    by_name = {s.state.pipeline: s for s in stats}
    for name, e in plan.expect.items():
        s = by_name.get(name)
        if s is None:
            return False
        if name == DEAD_LETTER:
            if s.state.active < e.active:
                return False
            continue
        st = s.state
        if settled(s) < e.pushed or st.active or st.delayed or st.reserved:
            return False
    return True


def live_view(stats: list[PipelineStat], plan: Plan, elapsed: float) -> Group:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("pipeline", "left"), ("ready", "center"), ("active", "right"),
                         ("delayed", "right"), ("running", "right"), ("ok", "right"),
                         ("retried", "right"), ("dead", "right"),
                         ("progress", "left"), ("", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    done_total = 0
    for s in stats:
        st, c = s.state, s.counters
        e = plan.expect.get(st.pipeline, Expect())
        if st.pipeline == DEAD_LETTER:
            done, total = st.active, e.active
        else:
            done, total = settled(s), max(e.pushed, c.pushed)
            done_total += done
        table.add_row(
            st.pipeline, "[green]yes[/]" if st.ready else "[yellow]no[/]",
            str(st.active), str(st.delayed), str(st.reserved), str(c.ok), str(c.retried),
            f"[red]{c.dead_lettered}[/]" if c.dead_lettered else "0",
            ProgressBar(total=max(total, 1), completed=min(done, total), width=20),
            f"{done}/{total}",
        )
    footer = Text(f"{done_total}/{plan.total} jobs settled · {elapsed:4.1f}s", style="bold")
    return Group(table, footer)


async def watch(client: RPCClient, plan: Plan, within: float) -> list[PipelineStat]:
    """Poll ``Stat`` under a live view until every job settled; resume the
    declared pipeline after 1.5 s."""
    start = time.monotonic()
    resumed = False
    stats = await client.stat()
    with Live(live_view(stats, plan, 0), console=console, refresh_per_second=10) as live:
        while True:
            elapsed = time.monotonic() - start
            if not resumed and elapsed >= 1.5:
                await client.resume([DECLARED])
                resumed = True
                live.console.print(f"  resumed [cyan]{DECLARED}[/]: its jobs run now")
            stats = await client.stat()
            live.update(live_view(stats, plan, elapsed))
            if (resumed and is_done(stats, plan)) or elapsed > within:
                break
            await asyncio.sleep(0.2)
    console.print()
    return stats


# -- checks ---------------------------------------------------------------------------------


def check(stats: list[PipelineStat], plan: Plan) -> list[str]:
    """Every expected counter and queue size; returns the mismatches."""
    problems: list[str] = []
    by_name = {s.state.pipeline: s for s in stats}
    for name, e in sorted(plan.expect.items()):
        s = by_name.get(name)
        if s is None:
            problems.append(f"pipeline {name!r} is missing from stat")
            continue
        got = s.counters.as_dict()
        for key in COUNTERS:
            if got.get(key) != getattr(e, key):
                problems.append(f"{name}: {key} = {got.get(key)}, expected {getattr(e, key)}")
        for key in ("active", "delayed", "reserved"):
            want = e.active if key == "active" else 0
            have = getattr(s.state, key)
            if have != want:
                problems.append(f"{name}: {have} jobs {key}, expected {want}")
    return problems


# -- main -----------------------------------------------------------------------------------


def step(text: str) -> None:
    console.print(f"\n[bold magenta]▶[/] [bold]{text}[/]")


async def demo(server: ServerProcess, plan: Plan, driver: str,
               settle_within: float) -> list[str]:
    problems: list[str] = []
    step("Waiting for the server")
    address = await server.wait_ready(20)
    console.print(f"  ready at [cyan]{address}[/] (try: RRJOBS_RPC={address} rrjobs stat)")

    async with RPCClient(address, timeout=20) as client:
        console.print(f"  pipelines: {', '.join(await client.list())}")

        counts: dict[str, int] = {}
        for m in plan.batch:
            counts[m.name] = counts.get(m.name, 0) + 1
        delayed = sum(1 for m in plan.batch if m.delay)
        step(f"Pushing {len(plan.batch)} jobs in one PushBatch")
        console.print("  " + ", ".join(f"{n} x {k}" for k, n in counts.items())
                      + f"; {delayed} emails delayed, priorities 1-3 on emails")
        await client.push_batch(plan.batch)

        step(f"Declaring pipeline '{DECLARED}' at run time ({driver}, not in jobs.consume)")
        options: dict[str, Any] = {"name": DECLARED, "driver": driver, "priority": 4,
                                   "retry": {"max_attempts": 2, "backoff": 0.2,
                                             "dead_letter": DEAD_LETTER}}
        if durable(driver):  # a file, which must be under rpc.declare_dir
            options["file"] = "rr.db"
        await client.declare(options)
        await client.push_batch(plan.declared)
        held = {s.state.pipeline: s.state for s in await client.stat()}[DECLARED]
        console.print(f"  pushed {len(plan.declared)} report jobs: {held.active} waiting, "
                      f"consuming: {'yes' if held.ready else 'no'}")
        if held.ready or held.active + held.delayed != len(plan.declared):
            problems.append(f"{DECLARED}: expected {len(plan.declared)} jobs held and no "
                            f"consumer, got active={held.active} ready={held.ready}")

        step("Live view of Stat until every job has settled")
        stats = await watch(client, plan, settle_within)
        if not is_done(stats, plan):
            problems.append(f"not every job settled within {settle_within:g}s")

        step("Final stat (rrjobs stat)")
        print_stats(stats, console)
        problems += check(stats, plan)
        if durable(driver):
            step("Pushing one more job, delayed 2s, then stopping before it is due")
            await client.push(Message(SURVIVOR_JOB, json.dumps({"to": "later@example.com"})
                                      .encode(), "emails", id=SURVIVOR_ID, delay=2))
            console.print(f"  job {SURVIVOR_ID} waits in the {driver} store")
    return problems


def durable(driver: str) -> bool:
    return driver in ("sqlite", "boltdb")


async def after_restart(server: ServerProcess, within: float) -> tuple[list[str], int]:
    """The second server on the same store: the delayed job and the dead letters survived."""
    problems: list[str] = []
    address = await server.wait_ready(20)
    async with RPCClient(address, timeout=20) as client:
        stats = {s.state.pipeline: s for s in await client.stat()}
        kept = stats[DEAD_LETTER].state.active
        console.print(f"  '{DEAD_LETTER}' still holds {kept} dead-lettered jobs")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = {s.state.pipeline: s for s in await client.stat()}
            if stats["emails"].counters.ok >= 1:
                break
            await asyncio.sleep(0.1)
        handled = stats["emails"].counters.ok
        if handled == 1:
            console.print(f"  job {SURVIVOR_ID}, pushed before the restart, ran after it")
        else:
            problems.append(f"after the restart, expected the delayed job to run once, "
                            f"got {handled}")
        if "later@example.com" not in server.log_text():
            problems.append("the restarted server did not log the surviving job")
    return problems, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rrjobs demo")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter jobs")
    parser.add_argument("--rpc", default="tcp://127.0.0.1:0",
                        help="server address [default: a free local port]")
    parser.add_argument("--timeout", type=float, default=25.0,
                        help="seconds to wait for the jobs to settle")
    args = parser.parse_args(argv)

    plan = build_plan(args.quick)
    driver = Config.load(CONFIG).jobs.pipelines["emails"].driver
    workdir = Path(tempfile.mkdtemp(prefix="rrjobs-demo-"))
    started = time.monotonic()
    console.rule("[bold]rrjobs demo")
    step(f"Starting: rrjobs serve -c {os.path.relpath(CONFIG)} --rpc {args.rpc}")
    console.print(f"  driver: {driver}; {plan.total} jobs to run")
    server = ServerProcess(args.rpc, workdir)
    problems: list[str] = []
    try:
        problems = asyncio.run(demo(server, plan, driver, args.timeout))
    except KeyboardInterrupt:
        problems.append("interrupted")
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        step("Stopping the server with SIGTERM")
        code = server.stop(timeout=15)
    log = server.log_text()
    if code == 0:
        console.print("  exited with code 0 after a graceful stop")
    else:
        problems.append(f"the server exited with code {code} (expected 0)")
    if "rrjobs stopped" not in log:
        problems.append("the server log has no 'rrjobs stopped' line")
    if not problems and durable(driver):
        step("Restarting the server on the same store")
        second = ServerProcess(args.rpc, workdir, "server-restart.log")
        try:
            more, kept = asyncio.run(after_restart(second, 15))
            problems += more
            expected_dead = plan.expect[DEAD_LETTER].active if DEAD_LETTER in plan.expect else 0
            if kept != expected_dead:
                problems.append(f"'{DEAD_LETTER}' held {kept} jobs after the restart, "
                                f"expected {expected_dead}")
        except Exception as exc:
            problems.append(f"restart: {type(exc).__name__}: {exc}")
        finally:
            step("Stopping the restarted server with SIGTERM")
            if second.stop(timeout=15) != 0:
                problems.append("the restarted server did not stop cleanly")
            else:
                console.print("  exited with code 0 after a graceful stop")

    dead_lines = [line.split(": ", 1)[-1] for line in log.splitlines()
                  if f"moved to pipeline '{DEAD_LETTER}'" in line]
    if dead_lines:
        step("Dead-lettered (from the server log)")
        for line in dead_lines:
            console.print(f"  {line}", soft_wrap=True)

    console.rule()
    elapsed = time.monotonic() - started
    if problems:
        tail = log.splitlines()[-15:]
        if tail:
            step("Last lines of the server log")
            for line in tail:
                console.print(f"  {line}", markup=False)
        for p in problems:
            console.print(f"[red]✗ {p}[/]", markup=True)
        console.print(f"[red bold]demo FAILED[/] after {elapsed:.1f}s; server log: "
                      f"{server.log_path}")
        return 1
    e = plan.expect
    ok = sum(x.ok for x in e.values())
    retried = sum(x.retried for x in e.values())
    dead = e[DEAD_LETTER].active if DEAD_LETTER in e else 0
    console.print(f"[green bold]✓ demo OK[/] in {elapsed:.1f}s: {plan.total} jobs pushed, "
                  f"{ok} handled, {retried} retries, {dead} dead-lettered to "
                  f"'{DEAD_LETTER}', server stopped cleanly")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
