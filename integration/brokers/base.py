"""Shared machinery: broker descriptions, local processes, readiness, paths.

Nothing here reads the environment at import time; every ``RRJOBS_*`` variable is
looked up when a function runs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from .certs import Certificates

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- errors
class BrokerUnavailable(RuntimeError):
    """No provider could supply the broker; the message says why for each provider."""


class BrokerStartError(RuntimeError):
    """A provider was available but the broker did not start (or did not become ready)."""


# --------------------------------------------------------------------------- settings
def cache_dir() -> Path:
    """Where install.sh caches Maven artifacts: ``$RRJOBS_CACHE_DIR`` or ``~/.cache/rrjobs``."""
    explicit = os.environ.get("RRJOBS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rrjobs"


def start_timeout() -> float:
    """Seconds a broker gets to become ready (``RRJOBS_BROKER_START_TIMEOUT``, default 120)."""
    return float(os.environ.get("RRJOBS_BROKER_START_TIMEOUT", "120"))


def keep_data() -> bool:
    """``RRJOBS_KEEP_BROKER_DATA=1`` keeps data dirs and logs after a broker stops."""
    return os.environ.get("RRJOBS_KEEP_BROKER_DATA", "") not in ("", "0", "false", "no")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- broker record
@dataclass(frozen=True)
class TLSAccess:
    """What a client needs for a broker the harness started with TLS (``amqp-tls`` & co.).

    ``certificates`` are this start's CA, server and client certificates and the wrong CA
    (:mod:`integration.brokers.certs`); ``username``/``password`` the broker's user (made
    fresh per start); ``endpoints`` the broker's listeners by name (Kafka: ``SSL``,
    ``SASL_SSL``, ...); ``files`` further credential files (NATS: ``creds``).
    """

    certificates: Certificates
    username: str = ""
    password: str = ""
    endpoints: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Broker:
    """A running broker as the harness hands it out.

    ``endpoint`` is what a client connects to (an ``amqp://`` URL, a Kafka bootstrap
    ``host:port``, a ``nats://`` URL, an SQS ``http://`` endpoint, a Pub/Sub ``host:port``);
    ``env`` holds the ``RRJOBS_*`` variables that point the test suite at it.
    """

    name: str
    endpoint: str
    provider: str  # "env", "local" or "testcontainers"
    env: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None
    pid: int | None = None
    pgid: int | None = None
    data_dir: str | None = None
    log_path: str | None = None
    container_id: str | None = None
    #: set for the TLS brokers (``amqp-tls``, ``kafka-tls``, ``nats-tls``)
    tls: TLSAccess | None = None

    def describe(self) -> str:
        where = f"pid {self.pid}" if self.pid else (self.container_id or "external")
        return f"{self.name} ({self.provider}, {where}) at {self.endpoint}"


class BrokerHandle(ABC):
    """A broker plus the means to stop it. Stopping is idempotent."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @abstractmethod
    def stop(self) -> None: ...


class ExternalHandle(BrokerHandle):
    """A broker the user runs (from an ``RRJOBS_*`` variable): never stopped by us."""

    def stop(self) -> None:
        return None


# --------------------------------------------------------------------------- ports
def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together while chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _endpoint_port(endpoint: str) -> int | None:
    """The port of a local broker's endpoint (``scheme://host:port/...`` or ``host:port``)."""
    try:
        return split_host_port(endpoint, 0)[1] or None
    except ValueError:
        return None


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"``) to a pair; tolerates a scheme prefix."""
    text = value.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- async helper
def run_async(factory: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
    """Run a coroutine to completion in a private thread and event loop.

    Safe to call whether or not an event loop is running in the calling thread, so sync
    code (the CLI, session-scoped pytest fixtures) can use the async client libraries.
    """
    result: list[T] = []
    error: list[BaseException] = []

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await factory()

    def target() -> None:
        try:
            result.append(asyncio.run(bounded()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="rrjobs-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if thread.is_alive():
        raise TimeoutError(f"probe still running after {timeout + 5.0:.0f} s")
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------- logs
def log_tail(path: str | Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    tail = data.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (empty log)"


def shown(endpoint: str) -> str:
    """``endpoint`` with a URL's password masked (the TLS brokers' users have one)."""
    from rrjobs.core.secrets import redact_url

    return redact_url(endpoint)


def note(message: str) -> None:
    """Progress messages go to stderr (stdout of the CLI is for ``export`` lines)."""
    print(f"[brokers] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- process groups
def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces.
    close = raw.rindex(")")
    return [raw[: raw.index(" ")], raw[raw.index("(") : close + 1], *raw[close + 2 :].split()]


def process_start_ticks(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot), to tell a reused PID apart."""
    stat = _proc_stat(pid)
    return int(stat[21]) if stat else None


def _running(pid: int, ticks: int | None) -> bool:
    """The process ``pid`` started at ``ticks`` still runs (is neither gone nor a zombie)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[2] != "Z" and int(stat[21]) == ticks


def _all_stats() -> dict[int, list[str]]:
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat:
                stats[int(entry.name)] = stat
    return stats


def descendants(roots: list[int]) -> dict[int, int | None]:
    """Every live descendant of ``roots`` (pid -> start ticks), whatever its process group.

    Some brokers' helpers leave the group (Erlang's ``erl_child_setup`` calls setsid), so a
    stop also tracks the process tree as it was before the first signal.
    """
    if not Path("/proc").is_dir():
        return {}
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(int(stat[3]), []).append(pid)
    found: dict[int, int | None] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and stats[child][2] != "Z":
                found[child] = int(stats[child][21])
                todo.append(child)
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel if anything is left in the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat and stat[2] != "Z" and int(stat[4]) == pgid:
            members.append(int(entry.name))
    return members


def stop_process_group(
    pgid: int,
    popen: subprocess.Popen[bytes] | None = None,
    grace: float = 15.0,
) -> bool:
    """SIGTERM a whole process group, SIGKILL whatever is left after ``grace`` seconds.

    Returns True when nothing of the group is left. ``popen`` (the leader, when it is our
    child) is reaped so that it leaves no zombie.
    """

    def reap() -> None:
        if popen is not None:
            popen.poll()

    members = group_members(pgid)
    strays = descendants([pgid, *members])
    group_gone = False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            group_gone = True
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap()
            if not group_members(pgid):
                group_gone = True
                break
            time.sleep(0.1)
        if group_gone:
            break
    reap()
    # Helpers that left the group normally exit with their parent: give them a moment,
    # then SIGTERM, then SIGKILL whatever is left.
    steps: tuple[tuple[signal.Signals | None, float], ...] = (
        (None, 1.0),
        (signal.SIGTERM, 2.0),
        (signal.SIGKILL, 2.0),
    )
    for stray_signal, wait in steps:
        alive = [pid for pid, ticks in strays.items() if _running(pid, ticks)]
        if not alive:
            break
        if stray_signal is not None:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, stray_signal)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_running(p, strays[p]) for p in alive):
            time.sleep(0.05)
    reap()
    return group_gone or not group_members(pgid)


# --------------------------------------------------------------------------- local launches
@dataclass
class LocalPlan:
    """How to run one broker as a local process group."""

    argv: list[str]
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)
    # Runs before the launch (e.g. Kafka's storage format); gets the log file path.
    prepare: Callable[[Path], None] | None = None
    # A readiness probe specific to this launch (defaults to the spec's endpoint probe).
    probe: Callable[[], None] | None = None
    version: str | None = None
    #: the certificates and credentials of a TLS broker (made by ``plan_local``)
    tls: TLSAccess | None = None


def launch(
    plan: LocalPlan, data_dir: Path, log_path: Path, banner: str = ""
) -> subprocess.Popen[bytes]:
    """Run ``plan``'s argv in ``data_dir`` as a new process group, output to ``log_path``."""
    with open(log_path, "ab") as log:
        if banner:
            log.write(banner.encode())
            log.flush()
        return subprocess.Popen(
            plan.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env={**os.environ, **plan.env},
            start_new_session=True,
        )


class LocalHandle(BrokerHandle):
    """A broker we started as a process group; ``stop`` kills the whole group.

    ``kill`` SIGKILLs it (no clean shutdown, what a crash leaves) and ``restart`` runs it
    again on the same ports and data dir, so its durable state survives: the fault tests'
    broker kill. ``restart`` needs the plan and probe the start used (``start_local`` keeps
    them).
    """

    def __init__(
        self,
        broker: Broker,
        popen: subprocess.Popen[bytes] | None,
        *,
        remove_data: bool,
        plan: LocalPlan | None = None,
        probe: Callable[[], None] | None = None,
        title: str = "",
    ) -> None:
        super().__init__(broker)
        self._popen = popen
        self._remove_data = remove_data
        self._stopped = False
        self._lock = threading.Lock()
        self._plan = plan
        self._probe = probe
        self._title = title or broker.name
        self.restarts = 0

    @property
    def plan(self) -> LocalPlan | None:
        """How the broker was launched (argv, env, endpoint): what ``restart`` runs again."""
        return self._plan

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker's process group and every descendant at once; wait until gone."""
        popen = self._popen
        if popen is None:
            return
        pgid = popen.pid
        victims = set(group_members(pgid)) | set(descendants([pgid]))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        popen.wait(10)
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        port = _endpoint_port(self.broker.endpoint)
        while port is not None and port_open(LOOPBACK, port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> float:
        """Start the broker again (after ``kill``) with the same argv, ports and data dir.

        Returns the seconds until it answered its probe; raises BrokerStartError if it does not.
        """
        plan, probe = self._plan, self._probe
        if plan is None or probe is None or self.broker.data_dir is None:
            raise BrokerStartError(f"{self._title}: this handle cannot restart its broker")
        if self.running:
            raise BrokerStartError(f"{self._title}: still running; kill it first")
        started = time.monotonic()
        data_dir = Path(self.broker.data_dir)
        log_path = Path(self.broker.log_path or data_dir / f"{self.broker.name}.log")
        popen = launch(plan, data_dir, log_path, banner="--- restart\n")
        self._popen = popen
        self.broker = dataclasses.replace(self.broker, pid=popen.pid, pgid=popen.pid)
        wait_ready(
            self._title,
            probe,
            start_timeout(),
            alive=lambda: popen.poll() is None,
            log_path=log_path,
        )
        self.restarts += 1
        return time.monotonic() - started

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        _LIVE_HANDLES.discard(self)
        pgid = self._popen.pid if self._popen is not None else self.broker.pgid
        if pgid is not None:
            clean = stop_process_group(pgid, self._popen)
            if not clean:
                note(f"{self.broker.name}: processes of group {pgid} survived SIGKILL")
        if self._remove_data and self.broker.data_dir and not keep_data():
            shutil.rmtree(self.broker.data_dir, ignore_errors=True)


# Handles of this process that must not outlive it (everything but the CLI's detached starts).
_LIVE_HANDLES: set[LocalHandle] = set()


def _stop_live_handles() -> None:
    for handle in list(_LIVE_HANDLES):
        with contextlib.suppress(Exception):
            handle.stop()


atexit.register(_stop_live_handles)


def wait_ready(
    name: str,
    probe: Callable[[], None],
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    log_path: str | Path | None = None,
) -> float:
    """Poll ``probe`` until it passes; returns the seconds it took.

    Raises BrokerStartError (with the log tail) if the process dies or time runs out.
    """
    started = time.monotonic()
    deadline = started + timeout
    delay = 0.05
    last: BaseException | None = None
    while True:
        if not alive():
            raise BrokerStartError(
                f"{name} exited before it was ready (last probe error: {last!r})\n"
                f"  log {log_path}:\n{log_tail(log_path)}"
            )
        try:
            probe()
            return time.monotonic() - started
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise BrokerStartError(
                f"{name} not ready after {timeout:.0f} s (last probe error: {last!r})\n"
                f"  log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class BrokerSpec(ABC):
    """One kind of broker: how to find it, start it locally, run it in a container, probe it."""

    name: ClassVar[str]  # CLI name: amqp, kafka, nats, sqs-elasticmq, sqs-moto, pubsub
    marker: ClassVar[str]  # pytest marker: amqp, kafka, nats, sqs, pubsub
    env_var: ClassVar[str]  # RRJOBS_* variable naming a running broker
    title: ClassVar[str]

    # -- endpoints ---------------------------------------------------------------
    def normalize_endpoint(self, value: str) -> str:
        return value.strip()

    def env_for(self, endpoint: str) -> dict[str, str]:
        return {self.env_var: endpoint}

    @abstractmethod
    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        """Raise unless the broker at ``endpoint`` answers a real request."""

    # -- local process -------------------------------------------------------------
    @abstractmethod
    def local_unavailable(self) -> str | None:
        """None if the binary/artifacts for a local process are here, else why not."""

    @abstractmethod
    def plan_local(self, data_dir: Path) -> LocalPlan: ...

    def plan_durable(self, data_dir: Path) -> LocalPlan:
        """``plan_local`` with the broker's messages kept in ``data_dir`` across a restart
        (the default: every local broker but ElasticMQ keeps them already)."""
        return self.plan_local(data_dir)

    def start_local(self, *, detached: bool = False, durable: bool = False) -> LocalHandle:
        """Start the broker as a process group in a fresh temp dir and wait until it is ready.

        ``detached`` starts are not stopped when this Python process exits (the CLI's ``up``);
        ``durable`` ones keep their messages on disk (``plan_durable``) for ``restart``.
        """
        data_dir = Path(
            tempfile.mkdtemp(prefix=f"rrjobs-{self.name}-", dir=os.environ.get("RRJOBS_TMPDIR"))
        )
        log_path = data_dir / f"{self.name}.log"
        plan = self.plan_durable(data_dir) if durable else self.plan_local(data_dir)
        started = time.monotonic()
        popen: subprocess.Popen[bytes] | None = None
        handle: LocalHandle | None = None
        try:
            if plan.prepare is not None:
                plan.prepare(log_path)
            popen = launch(plan, data_dir, log_path)
            broker = Broker(
                name=self.name,
                endpoint=plan.endpoint,
                provider="local",
                env=self.env_for(plan.endpoint),
                version=plan.version,
                pid=popen.pid,
                pgid=popen.pid,
                data_dir=str(data_dir),
                log_path=str(log_path),
                tls=plan.tls,
            )
            probe = plan.probe or (lambda: self.probe(plan.endpoint))
            handle = LocalHandle(
                broker, popen, remove_data=True, plan=plan, probe=probe, title=self.title
            )
            if not detached:
                _LIVE_HANDLES.add(handle)
            proc = popen
            wait_ready(
                self.title,
                probe,
                start_timeout(),
                alive=lambda: proc.poll() is None,
                log_path=log_path,
            )
        except BaseException as exc:
            if popen is not None:
                stop_process_group(popen.pid, popen)
            if handle is not None:
                _LIVE_HANDLES.discard(handle)  # stopped already; its data dir is kept
            if isinstance(exc, BrokerStartError):
                raise BrokerStartError(f"{exc}\n  data dir kept: {data_dir}") from None
            if isinstance(exc, Exception):
                raise BrokerStartError(
                    f"{self.title} failed to start: {exc!r}\n"
                    f"  log {log_path}:\n{log_tail(log_path)}\n  data dir kept: {data_dir}"
                ) from exc
            raise
        note(f"{self.title} ready in {time.monotonic() - started:.1f} s at {shown(plan.endpoint)}")
        return handle

    # -- container -----------------------------------------------------------------
    @abstractmethod
    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        """Run the broker from its pinned official image with testcontainers."""


def which(name: str) -> str | None:
    return shutil.which(name)


def java_unavailable() -> str | None:
    return None if which("java") else "no `java` on PATH (install a JRE 17+)"


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Silence noisy client loggers while a probe polls a broker that is still starting."""
    import logging

    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def http_get(url: str, timeout: float) -> tuple[int, str]:
    """A plain GET with the standard library; returns (status, body)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
