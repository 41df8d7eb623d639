"""The reliability suite's driver-agnostic tools: one workload, run the same way on every driver.

* :class:`Pipe`: a pipeline of one of the drivers against the harness's brokers, as the
  configuration ``rrjobs serve`` and the producer read (``endpoint=`` overrides the broker's
  address, e.g. a toxiproxy listener in front of it).
* :class:`Serve`: an ``rrjobs serve`` subprocess running :mod:`reliability.ledger_app`, whose
  handler appends each job id it handles to a ledger file of its own; SIGKILL, SIGTERM, restart.
* :class:`Producer`: pushes jobs with known ids (``ids``), in batches, at a rate if asked,
  retrying a batch the broker refused (same ids: a retry may duplicate, never lose).
* :class:`Ledger`: reads every serve's ledger; :meth:`Ledger.tally` counts handled, lost
  (pushed ids never handled) and duplicated (handled lines minus distinct ids).
* :func:`rates` and :func:`recovery_time`: throughput before, during and after a fault, and
  the time until handling was back (see :func:`recovery_time`).
* :func:`row` and :func:`write_row`: the result rows of ``reliability/results/*.jsonl``
  (full runs) or of a scratch directory (short runs), which :mod:`reliability.report` renders.

Everything runs on 127.0.0.1. Counts come from :func:`counts`: small in the short form (CI),
large with ``RRJOBS_RELIABILITY=full`` (``make reliability``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from integration.brokers import Broker
from integration.brokers.base import LOOPBACK, free_ports, log_tail
from integration.brokers.pubsub import project_id
from integration.brokers.sqs import ACCESS_KEY, REGION, SECRET_KEY
from reliability.ledger_app import JOB
from rrjobs import Client, Config, Jobs, Message

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
APP = "reliability.ledger_app:app"

#: The drivers, in the table's order.
DRIVERS: tuple[str, ...] = ("memory", "sqlite", "amqp", "kafka", "nats", "sqs", "google_pub_sub",
                            "beanstalk", "redis", "postgres")
#: The harness broker (``integration.brokers`` name) of each broker driver.
BROKERS: dict[str, str] = {
    "amqp": "amqp",
    "kafka": "kafka",
    "nats": "nats",
    "sqs": "sqs-elasticmq",
    "google_pub_sub": "pubsub",
    "beanstalk": "beanstalk",
    "redis": "redis",
    "postgres": "postgres",
}
#: Drivers whose jobs outlive the process that serves them.
DURABLE: frozenset[str] = frozenset(DRIVERS) - {"memory"}

# Kafka's group timings short enough that a rebalance after a kill takes seconds.
KAFKA_GROUP = {
    "session_timeout": "6s",
    "heartbeat_interval": "500ms",
    "commit_interval": "100ms",
    "revoke_timeout": "5s",
}


# --------------------------------------------------------------------------- modes
def mode() -> str:
    """``"full"`` with ``RRJOBS_RELIABILITY=full`` (``make reliability``), else ``"short"``."""
    return "full" if os.environ.get("RRJOBS_RELIABILITY", "").strip() == "full" else "short"


def counts(short: int, full: int) -> int:
    """``short`` in the short form (CI), ``full`` in the full run."""
    return full if mode() == "full" else short


def matrix(drivers: Sequence[str], short: Sequence[str]) -> list[str]:
    """The drivers a scenario runs on: every one of ``drivers`` in the full run, only
    ``short`` in the short form (CI's time budget; each driver is in some short scenario)."""
    return list(drivers) if mode() == "full" else [d for d in drivers if d in short]


def ids(count: int, prefix: str = "j") -> list[str]:
    """``count`` distinct job ids, ``<prefix>-000000`` on."""
    return [f"{prefix}-{i:06d}" for i in range(count)]


def payload(poison: bool = False) -> bytes:
    """A job's payload: the push time (for the ledger's latency), ``poison`` first to fail."""
    stamp = f"{time.time():.6f}"
    return f"poison {stamp}".encode() if poison else stamp.encode()


# --------------------------------------------------------------------------- pipelines
@dataclass
class Pipe:
    """One pipeline of ``driver`` named ``name`` (also its queue, topic, stream, subscription).

    ``endpoint``: the broker's address (a ``Broker.endpoint``), or the sqlite file; empty for
    memory. ``options`` are merged over the driver's defaults; ``retry`` is the pipeline's
    ``retry`` section; ``timeout`` its handler time limit (seconds, 0 none).
    """

    driver: str
    name: str
    endpoint: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, Any] | None = None
    timeout: float = 0.0
    #: further pipelines of the same file (e.g. a dead-letter pipeline), by name
    extra_pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def driver_options(self) -> dict[str, Any]:
        name = self.name
        base: dict[str, Any]
        if self.driver == "memory":
            base = {"prefetch": 10_000}
        elif self.driver == "sqlite":
            base = {"file": self.endpoint, "prefetch": 500}
        elif self.driver == "amqp":
            base = {
                "queue": name,
                "routing_key": name,
                "exchange": "rrjobs.reliability",
                "exchange_durable": True,
                "durable": True,
                "prefetch": 100,
            }
        elif self.driver == "kafka":
            base = {
                "auto_create_topics_enable": True,
                "consumer_options": {"topics": [name]},
                "group_options": {"group_id": name, **KAFKA_GROUP},
                "prefetch": 100,
            }
        elif self.driver == "nats":
            base = {"subject": f"{name}.jobs", "stream": name, "prefetch": 100}
        elif self.driver == "sqs":
            base = {
                "queue": name,
                "prefetch": 10,
                "max_messages_in_flight": 100,
                "wait_time_seconds": 1,
            }
        elif self.driver == "google_pub_sub":
            base = {"project_id": project_id(), "topic": name, "prefetch": 100}
        elif self.driver == "beanstalk":
            base = {"tube": name, "prefetch": 100, "reserve_timeout": 1}
        elif self.driver == "redis":
            base = {"queue": name, "prefetch": 100}
        elif self.driver == "postgres":
            base = {"prefetch": 100, "poll_interval": "500ms"}
        else:
            raise ValueError(f"unknown driver {self.driver!r}; known: {', '.join(DRIVERS)}")
        return {**base, **self.options}

    def broker_section(self, endpoint: str | None = None) -> dict[str, Any]:
        """The top-level section of the driver's broker (empty for memory and sqlite)."""
        where = endpoint or self.endpoint
        if self.driver in ("amqp", "nats", "beanstalk", "redis"):
            return {self.driver: {"addr": where}}
        if self.driver == "kafka":
            return {"kafka": {"brokers": [where]}}
        if self.driver == "sqs":
            return {
                "sqs": {
                    "key": ACCESS_KEY,
                    "secret": SECRET_KEY,
                    "region": REGION,
                    "endpoint": where,
                }
            }
        if self.driver == "google_pub_sub":
            return {"google_pub_sub": {"endpoint": where, "insecure": True}}
        if self.driver == "postgres":
            return {"postgres": {"dsn": where}}
        return {}

    def pipeline(self) -> dict[str, Any]:
        section: dict[str, Any] = {"driver": self.driver, "config": self.driver_options()}
        if self.retry is not None:
            section["retry"] = self.retry
        if self.timeout:
            section["timeout"] = self.timeout
        return section

    def config(
        self,
        *,
        consume: bool = True,
        endpoint: str | None = None,
        listen: str = f"tcp://{LOOPBACK}:0",
        workers: int = 8,
        destroy_timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The whole configuration (a dict for :class:`rrjobs.Config`, or YAML for serve)."""
        return {
            "version": "3",
            "rpc": {"listen": listen},
            **self.broker_section(endpoint),
            "jobs": {
                "pool": {"num_workers": workers, "destroy_timeout": destroy_timeout},
                "consume": [self.name] if consume else [],
                "pipelines": {self.name: self.pipeline(), **self.extra_pipelines},
            },
        }

    def write(self, path: Path, **kwargs: Any) -> Path:
        """:meth:`config` as a YAML file at ``path``."""
        path.write_text(yaml.safe_dump(self.config(**kwargs), sort_keys=False))
        return path


def lease_options(driver: str, seconds: float) -> dict[str, Any]:
    """A driver's options for a lease (ack deadline, visibility timeout) of ``seconds``:
    how long a job held by a dead consumer waits before it is delivered again. Empty for
    the drivers whose broker gives a dead consumer's jobs back at once (amqp, kafka) or
    that have none (memory)."""
    if driver == "sqlite":
        return {"lease": f"{seconds:g}s"}
    if driver == "nats":
        return {"ack_wait": f"{seconds:g}s"}
    if driver == "postgres":
        return {"visibility_timeout": f"{max(1.0, seconds):g}s"}
    if driver == "sqs":
        return {"visibility_timeout": max(1, round(seconds))}
    if driver == "redis":
        return {"visibility_timeout": f"{seconds:g}s"}
    if driver == "google_pub_sub":
        return {"ack_deadline": max(1, round(seconds))}
    if driver == "beanstalk":
        return {"ttr": max(1, round(seconds))}
    return {}


def inflight_options(driver: str, jobs: int) -> dict[str, Any]:
    """A driver's options letting a process hold ``jobs`` unacknowledged jobs at once
    (prefetched, queued or in handlers)."""
    if driver == "sqs":
        return {"prefetch": 10, "max_messages_in_flight": jobs}
    return {"prefetch": jobs}


def pipe(driver: str, name: str, broker: Broker | None, directory: Path, **kwargs: Any) -> Pipe:
    """The :class:`Pipe` of ``driver``: on ``broker`` (its endpoint), or a sqlite file in
    ``directory``, or memory."""
    if driver == "sqlite":
        return Pipe(driver, name, str(directory / f"{name}.db"), **kwargs)
    if driver == "memory":
        return Pipe(driver, name, "", **kwargs)
    if broker is None:
        raise ValueError(f"the {driver} driver needs its broker")
    return Pipe(driver, name, broker.endpoint, **kwargs)


# --------------------------------------------------------------------------- serve processes
class Serve:
    """One ``rrjobs serve`` of :mod:`reliability.ledger_app` on the config file ``config``.

    The handler's ledger goes to ``ledger_dir`` (one file per process, so restarts add
    files); the process's stderr to ``<ledger_dir>/serve-<index>.log``. Each serve has an
    RPC port of its own (``address``), fixed across restarts. ``sleep`` makes each handler
    take that long. ``env`` adds variables (e.g. ``RRJOBS_RPC_TOKEN``).
    """

    def __init__(
        self,
        config: Path,
        ledger_dir: Path,
        *,
        index: int = 0,
        sleep: float = 0.0,
        env: Mapping[str, str] | None = None,
        log_level: str = "warning",
        processes: int = 1,
    ) -> None:
        self.config = config
        self.processes = processes
        self.ledger_dir = ledger_dir
        self.index = index
        self.sleep = sleep
        self.env = dict(env or {})
        self.log_level = log_level
        (port,) = free_ports(1)
        self.address = f"tcp://{LOOPBACK}:{port}"
        self.log_path = ledger_dir / f"serve-{index}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen else None
        return f"Serve(index={self.index}, pid={pid}, address={self.address})"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Launch the process (returns at once; :meth:`ready` waits for the pipeline)."""
        if self.running:
            raise RuntimeError(f"{self!r} already runs")
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        rrjobs = Path(sys.executable).with_name("rrjobs")
        env = {
            **os.environ,
            **self.env,
            "RRJOBS_LEDGER_DIR": str(self.ledger_dir),
            "RRJOBS_HANDLER_SLEEP": str(self.sleep),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [
                    str(rrjobs),
                    "serve",
                    "-c",
                    str(self.config),
                    "--app",
                    APP,
                    "--rpc",
                    self.address,
                    "--log-level",
                    self.log_level,
                    *(["--processes", str(self.processes)] if self.processes != 1 else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.ledger_dir,
                start_new_session=True,
            )
        self.starts += 1

    async def ready(self, pipeline: str, within: float = 60.0) -> float:
        """Wait until the serve's RPC answers and ``pipeline`` is consuming; the seconds taken."""
        started = time.monotonic()
        last: BaseException | None = None
        async with Client(self.address, timeout=2.0, retries=0) as client:
            while time.monotonic() - started < within:
                if not self.running:
                    raise RuntimeError(f"{self!r} exited:\n{log_tail(self.log_path)}")
                try:
                    for stat in await client.stat():
                        if stat.state.pipeline == pipeline and stat.state.ready:
                            return time.monotonic() - started
                except Exception as exc:
                    last = exc
                await asyncio.sleep(0.1)
        raise TimeoutError(
            f"{self!r}: {pipeline} not ready after {within:.0f} s ({last!r})\n"
            f"{log_tail(self.log_path)}"
        )

    async def start_ready(self, pipeline: str, within: float = 60.0) -> float:
        self.start()
        return await self.ready(pipeline, within)

    def kill(self) -> None:
        """SIGKILL (no shutdown at all), and reap."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    async def terminate(self, within: float = 60.0) -> int:
        """SIGTERM (the graceful stop) and wait for the exit; its return code."""
        popen = self.popen
        if popen is None:
            raise RuntimeError(f"{self!r} never started")
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        while popen.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self!r} still running {within:.0f} s after SIGTERM")
            await asyncio.sleep(0.05)
        return popen.returncode

    def stop(self) -> None:
        """Cleanup: SIGTERM, then SIGKILL after 10 s."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


class _Closing:
    """An async context manager whose exit is ``aclose()``."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Fleet(_Closing):
    """Several :class:`Serve` of one pipeline (``count`` processes on one config file), an
    async context manager that stops them all on exit. ``processes``: each serve's
    ``--processes`` (a supervisor of that many runtime processes)."""

    def __init__(
        self,
        pipe: Pipe,
        directory: Path,
        count: int = 1,
        *,
        sleep: float = 0.0,
        endpoint: str | None = None,
        workers: int = 8,
        destroy_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
    ) -> None:
        self.pipe = pipe
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = pipe.write(
            directory / "serve.yaml",
            endpoint=endpoint,
            workers=workers,
            destroy_timeout=destroy_timeout,
        )
        self.ledger = Ledger(directory / "ledger")
        self.serves = [
            Serve(
                self.config,
                self.ledger.directory,
                index=i,
                sleep=sleep,
                env=env,
                processes=processes,
            )
            for i in range(count)
        ]

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)

    async def start(self, within: float = 90.0) -> None:
        for serve in self.serves:
            serve.start()
        await asyncio.gather(*(s.ready(self.pipe.name, within) for s in self.serves))

    def stop(self) -> None:
        for serve in self.serves:
            serve.stop()

    @property
    def address(self) -> str:
        """The RPC address of the first serve (the memory producer pushes there)."""
        return self.serves[0].address

    def logs(self) -> str:
        return "\n".join(f"serve {s.index}:\n{s.log()}" for s in self.serves)


# --------------------------------------------------------------------------- producer
class Producer(_Closing):
    """Pushes jobs with known ids to a pipeline; an async context manager.

    Through a :class:`rrjobs.Jobs` of its own (``pipe``'s config, consuming nothing) for the
    durable drivers, through the RPC of a serve (``address``) for memory, whose queue lives
    in the serve. ``pushed`` maps each id whose push was confirmed to the time it was;
    ``retries`` counts batches pushed again after an error (their ids may then be handled
    twice, never lost). ``endpoint`` overrides the broker's address (a proxy in front).
    """

    def __init__(
        self,
        pipe: Pipe,
        *,
        address: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.pipe = pipe
        self.address = address
        self.endpoint = endpoint
        self.pushed: dict[str, float] = {}
        self.retries = 0
        self.errors: list[str] = []
        self._jobs: Jobs | None = None
        self._client: Client | None = None

    async def __aenter__(self) -> Producer:
        if self.pipe.driver == "memory":
            if self.address is None:
                raise ValueError("a memory pipeline is pushed to through a serve's RPC address")
            self._client = Client(self.address, timeout=10.0)
        else:
            jobs = Jobs(Config(self.pipe.config(consume=False, endpoint=self.endpoint)))
            await jobs.start()
            self._jobs = jobs
        return self

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._jobs is not None:
            await self._jobs.stop()

    async def _send(self, batch: Sequence[Message]) -> None:
        if self._client is not None:
            await self._client.push_batch(batch)
        else:
            assert self._jobs is not None
            await self._jobs.push_batch(list(batch))

    async def push(
        self,
        job_ids: Sequence[str],
        *,
        rate: float | None = None,
        batch: int = 100,
        retry_for: float = 120.0,
        poison: Iterable[str] = (),
    ) -> None:
        """Push ``job_ids`` in batches of ``batch``; at most ``rate`` jobs/s when given.

        A batch that fails is pushed again (same ids) every 0.2 s for up to ``retry_for``
        seconds, then the error is raised. Ids in ``poison`` get a payload that always fails.
        """
        bad = set(poison)
        started = time.monotonic()
        for offset in range(0, len(job_ids), batch):
            chunk = job_ids[offset : offset + batch]
            if rate:
                due = started + offset / rate
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            failing_since: float | None = None
            while True:
                msgs = [Message(JOB, payload(i in bad), self.pipe.name, id=i) for i in chunk]
                try:
                    await self._send(msgs)
                    break
                except Exception as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    if now - failing_since > retry_for:
                        raise
                    self.retries += 1
                    await asyncio.sleep(0.2)
            now_wall = time.time()
            for i in chunk:
                self.pushed[i] = now_wall

    def spawn(self, job_ids: Sequence[str], **kwargs: Any) -> asyncio.Task[None]:
        """:meth:`push` as a task (push while something else happens)."""
        return asyncio.get_running_loop().create_task(self.push(job_ids, **kwargs))


# --------------------------------------------------------------------------- the ledger
@dataclass(frozen=True)
class Handled:
    """One ledger line: a job handled once (``poison``: one failing attempt of a poison job)."""

    id: str
    pushed_at: float
    handled_at: float
    pid: int
    poison: bool = False


@dataclass(frozen=True)
class Tally:
    pushed: int
    handled: int  # distinct pushed ids handled at least once
    lost: int
    duplicated: int  # handled lines of pushed ids minus distinct ids
    lost_ids: tuple[str, ...] = ()  # the first few, for the failure message

    def as_dict(self) -> dict[str, int]:
        return {
            "pushed": self.pushed,
            "handled": self.handled,
            "lost": self.lost,
            "duplicated": self.duplicated,
        }


class Ledger:
    """Every line the serves of one directory wrote (``ledger-<pid>.log`` files), read
    incrementally: :meth:`read` returns all records so far and only parses what is new."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self.records: list[Handled] = []

    def read(self) -> list[Handled]:
        for path in sorted(self.directory.glob("ledger-*.log")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
            if not data:
                continue
            self._offsets[path] = offset + len(data)
            data = self._partial.pop(path, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                job_id, pushed_at, handled_at, pid = line.decode().split(" ")
                poison = job_id.startswith("!")
                self.records.append(
                    Handled(
                        job_id.lstrip("!"), float(pushed_at), float(handled_at), int(pid), poison
                    )
                )
        return self.records

    def handled_ids(self) -> set[str]:
        return {r.id for r in self.read() if not r.poison}

    def tally(self, pushed: Iterable[str]) -> Tally:
        """Counts over the pushed ids (jobs of others, e.g. poison jobs, are left out)."""
        wanted = set(pushed)
        seen = Counter(r.id for r in self.read() if not r.poison and r.id in wanted)
        lost = sorted(wanted - seen.keys())
        return Tally(
            pushed=len(wanted),
            handled=len(seen),
            lost=len(lost),
            duplicated=sum(seen.values()) - len(seen),
            lost_ids=tuple(lost[:10]),
        )

    async def wait(self, pushed: Iterable[str], within: float, *, settle: float = 0.0) -> Tally:
        """Wait until every id of ``pushed`` is handled (or ``within`` seconds passed), then
        ``settle`` seconds more for late duplicates; the tally."""
        wanted = set(pushed)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if wanted <= self.handled_ids():
                break
            await asyncio.sleep(0.1)
        if settle:
            await asyncio.sleep(settle)
        return self.tally(wanted)

    async def wait_count(self, count: int, within: float) -> int:
        """Wait until ``count`` distinct ids are handled (or ``within`` s); how many are."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.handled_ids()) >= count:
                break
            await asyncio.sleep(0.05)
        return len(self.handled_ids())

    def times(self) -> list[float]:
        """Handle times (wall clock) of every line, sorted."""
        return sorted(r.handled_at for r in self.read() if not r.poison)

    def latencies_ms(self) -> list[float]:
        """Push-to-handle latency of every handled line, ms, sorted."""
        return sorted(
            (r.handled_at - r.pushed_at) * 1000 for r in self.read() if not r.poison and r.pushed_at
        )


# --------------------------------------------------------------------------- measures
def rate(times: Sequence[float], start: float, end: float) -> float | None:
    """Jobs/s handled in ``[start, end)`` (``times`` sorted); None for an empty window."""
    if end <= start:
        return None
    from bisect import bisect_left

    return (bisect_left(times, end) - bisect_left(times, start)) / (end - start)


@dataclass(frozen=True)
class Rates:
    before: float | None
    during: float | None
    after: float | None
    recovery_s: float | None

    def as_dict(self) -> dict[str, float | None]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "rate_before": r(self.before),
            "rate_during": r(self.during),
            "rate_after": r(self.after),
            "recovery_s": r(self.recovery_s),
        }


def recovery_time(
    times: Sequence[float],
    fault_at: float,
    fault_end: float,
    before: float | None,
    *,
    window: float = 1.0,
    share: float = 0.5,
) -> float | None:
    """Seconds from ``fault_at`` until handling was back: until the first job handled at or
    after ``fault_end`` (the restart) from which ``window`` seconds handled at least ``share``
    of the ``before`` rate, or (when too few jobs were left for that) until the first job
    handled after ``fault_end``. None when nothing was handled after it."""
    from bisect import bisect_left

    later = bisect_left(times, fault_end)
    if later >= len(times):
        return None
    if before:
        need = share * before * window
        last = times[-1]
        for index in range(later, len(times)):
            t = times[index]
            if t + window > last:
                break
            if bisect_left(times, t + window) - index >= need:
                return t - fault_at
    return times[later] - fault_at


def rates(times: Sequence[float], start: float, fault_at: float, fault_end: float) -> Rates:
    """Throughput before the fault (``[start, fault_at)``), during it (``[fault_at,
    recovered)``) and after (``[recovered, last handled]``), and the recovery time."""
    before = rate(times, start, fault_at)
    recovery = recovery_time(times, fault_at, fault_end, before)
    recovered = fault_at + recovery if recovery is not None else fault_end
    end = times[-1] if times else recovered
    return Rates(before, rate(times, fault_at, recovered), rate(times, recovered, end), recovery)


@dataclass(frozen=True)
class Outcome:
    """What :func:`fault_mid_stream` saw: the tally, the rates, when the fault began and
    when its end (the restart) began, and what ``recover`` returned."""

    tally: Tally
    rates: Rates
    fault_at: float
    fault_end: float
    recovered: Any
    push_retries: int

    def lost_message(self, producer: Producer, fleet: Fleet) -> str:
        """Why lost != 0 is a failure: the ids, when they were pushed, the serves' logs."""
        at = [
            producer.pushed[i] - self.fault_at for i in self.tally.lost_ids if i in producer.pushed
        ]
        when = f" (pushed {min(at):+.2f} to {max(at):+.2f} s from the fault)" if at else ""
        return f"{self.tally.lost} lost, e.g. {self.tally.lost_ids}{when}\n{fleet.logs()}"


async def fault_mid_stream(
    fleet: Fleet,
    producer: Producer,
    job_ids: Sequence[str],
    *,
    fault: Callable[[], Awaitable[Any]],
    recover: Callable[[], Awaitable[Any]],
    rate: float | None = None,
    at: float = 1 / 3,
    down: float = 1.0,
    batch: int = 20,
    within: float = 120.0,
    settle: float = 2.0,
) -> Outcome:
    """Push ``job_ids`` at ``rate``; once a share ``at`` of them is handled, ``fault()``; after
    ``down`` seconds ``recover()`` (its result is kept); then wait until every pushed id is
    handled (``within``) and ``settle`` seconds for late duplicates. Lost jobs are not
    asserted here: the caller does (``Outcome.lost_message`` says what to print)."""
    started = time.time()
    pushing = producer.spawn(job_ids, rate=rate, batch=batch)
    got = await fleet.ledger.wait_count(max(1, int(len(job_ids) * at)), within)
    if got < int(len(job_ids) * at):
        pushing.cancel()
        raise AssertionError(
            f"only {got} of {len(job_ids)} handled before the fault\n{fleet.logs()}"
        )
    fault_at = time.time()
    await fault()
    await asyncio.sleep(down)
    fault_end = time.time()
    recovered = await recover()
    await pushing
    tally = await fleet.ledger.wait(producer.pushed, within, settle=settle)
    measured = rates(fleet.ledger.times(), started, fault_at, fault_end)
    return Outcome(tally, measured, fault_at, fault_end, recovered, producer.retries)


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """The ``share`` (0..1) percentile of sorted values (nearest rank); None when empty."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


# --------------------------------------------------------------------------- result rows
def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def row(
    section: str,
    driver: str,
    scenario: str,
    tally: Tally | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A result row (COMMON keys first): ``tally``'s counts, then ``fields`` (``extra={}``
    for anything outside the common keys)."""
    base: dict[str, Any] = {
        "section": section,
        "driver": driver,
        "scenario": scenario,
        "mode": mode(),
    }
    if tally is not None:
        base.update(tally.as_dict())
    base.update(fields)
    base["when"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base["commit"] = _commit()
    return base


#: Keys that tell two rows of one file apart (a new row replaces the old one with the same).
ROW_KEY = ("section", "driver", "scenario", "processes", "jobs")


def results_dir() -> Path:
    """``reliability/results`` in the full run; in the short form ``$RRJOBS_RELIABILITY_OUT``
    or a scratch directory, so CI never rewrites the committed results."""
    if mode() == "full":
        return RESULTS
    explicit = os.environ.get("RRJOBS_RELIABILITY_OUT")
    out = Path(explicit) if explicit else Path(tempfile.gettempdir()) / "rrjobs-reliability"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_row(result: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Write ``result`` to ``<section>-<driver>.jsonl``, replacing a row of the same key."""
    where = directory or results_dir()
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{result['section']}-{result['driver']}.jsonl"
    key = tuple(result.get(k) for k in ROW_KEY)
    kept: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and tuple(json.loads(line).get(k) for k in ROW_KEY) != key:
                kept.append(line)
    kept.append(json.dumps(dict(result), sort_keys=False))
    path.write_text("\n".join(kept) + "\n")
    return path


def read_rows(directory: Path = RESULTS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return rows
