"""Loading a RoadRunner-style ``.rr.yaml``.

* ``${VAR}`` and ``${VAR:-default}`` are expanded in every string value, as
  RoadRunner does; ``$$`` is a literal ``$``. An unset ``VAR`` without a
  default is an error naming it and its key (``${VAR:-}`` is empty). The
  environment is read when the file is loaded, never at import time.
* The ``jobs:``, ``rpc:``, ``metrics:`` and ``logs:`` sections are validated
  strictly: an unknown key or a bad value is a
  :class:`~rrjobs.core.errors.ConfigError` whose message starts with the exact
  key path (``jobs.pipelines.test-1.config.prefetch: must be ≥ 1``), an unknown
  key with a "did you mean" (``rpc.lisen: unknown key (did you mean 'listen'?)``).
* So is ``dashboard:`` (:class:`DashboardConfig`, rrjobs' web dashboard, off
  unless ``enabled``).
* A top-level section named after an installed driver (``amqp:``) is that
  driver's, validated by it (:func:`validate_drivers` does it at load, without
  connecting). RoadRunner's other sections (:data:`ROADRUNNER_SECTIONS`:
  ``server``, ``http``, ...) are accepted and ignored, with one INFO line. Any
  other top-level key is an error when it looks like a typo of a known one,
  and otherwise ignored with a warning.
* RoadRunner's settings that mean nothing here (PHP worker pool and supervisor
  keys, ``jobs.num_pollers``, ``metrics.collect``) load; one INFO line names those
  set. ``jobs.pool.num_workers: 0`` (RoadRunner's default) is the number of CPUs.
"""

from __future__ import annotations

import difflib
import logging
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rrjobs.configfile import UnsetVariableError as UnsetVariableError
from rrjobs.configfile import expand_env as expand_env
from rrjobs.configfile import parse as parse_tree
from rrjobs.configfile import read as read_file
from rrjobs.core.errors import ConfigError
from rrjobs.core.options import Duration, StrictModel, config_error
from rrjobs.core.secret_types import Secret
from rrjobs.core.secrets import remember_tree

log = logging.getLogger("rrjobs.config")

M = TypeVar("M", bound=BaseModel)

# -- environment expansion: rrjobs.configfile (re-exported here) ---------------------------


# -- strict validation with suggestions ---------------------------------------------------


def suggest(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _keys_at(annotation: Any, loc: Sequence[str | int]) -> list[str] | None:
    """The keys accepted by the model found at ``loc`` under ``annotation``
    (through model fields, mapping values, list items and optionals)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {f.alias or n: f for n, f in annotation.model_fields.items()}
        if not loc:
            return list(fields)
        field = fields.get(str(loc[0]))
        return _keys_at(field.annotation, loc[1:]) if field is not None else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2 and loc:
        return _keys_at(args[1], loc[1:])
    if origin is list and args and loc:
        return _keys_at(args[0], loc[1:])
    for arg in args:  # Optional / Union / Annotated
        found = _keys_at(arg, loc)
        if found is not None:
            return found
    return None


def validate_model(model: type[M], data: Any, key: str) -> M:
    """Validate ``data`` with ``model``; errors name paths under ``key``, and an
    unknown key comes with the closest known one."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        err = config_error(key, exc)
        problems = list(err.problems)
        for n, detail in enumerate(exc.errors()):
            loc = detail.get("loc", ())
            if detail.get("type") == "extra_forbidden" and loc:
                known = _keys_at(model, loc[:-1])
                if known is not None:
                    path, message = problems[n]
                    problems[n] = (path, message + suggest(str(loc[-1]), known))
        raise ConfigError(problems[0][0], problems[0][1], problems) from None


# -- the models ---------------------------------------------------------------------------


#: Keys of RoadRunner's worker pool that configure PHP processes. They are
#: accepted so that a RoadRunner file loads, and those set are named in one INFO
#: line at load time: rrjobs has no PHP workers to apply them to.
PHP_POOL_KEYS = (
    "command",
    "debug",
    "reset_timeout",
    "stream_timeout",
    "max_queue_size",
    "dynamic_allocator",
)


#: ``jobs.pool.supervisor`` keys that configure PHP processes (reported the same way).
SUPERVISOR_PHP_KEYS = ("watch_tick", "ttl", "idle_ttl", "max_worker_memory")


class SupervisorConfig(StrictModel):
    """``jobs.pool.supervisor``. Only ``exec_ttl`` applies to rrjobs."""

    exec_ttl: Duration = 0.0
    watch_tick: Duration | None = None
    ttl: Duration | None = None
    idle_ttl: Duration | None = None
    max_worker_memory: int | None = None


class PoolConfig(StrictModel):
    """``jobs.pool``: the handler worker pool."""

    #: handlers running at once; ``0`` (RoadRunner's default) is the number of CPUs
    num_workers: int = Field(default=0, ge=0, validate_default=True)
    max_jobs: int = Field(default=0, ge=0)
    allocate_timeout: Duration = 60.0
    destroy_timeout: Duration = 60.0
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    command: str | None = None
    debug: bool | None = None
    reset_timeout: Duration | None = None
    stream_timeout: Duration | None = None
    max_queue_size: int | None = None
    dynamic_allocator: dict[str, Any] | None = None
    #: runtime processes ``rrjobs serve`` starts (an rrjobs key, not RoadRunner's): ``1``
    #: runs the runtime in the serve process itself; more start a supervisor of that many
    #: child processes consuming the same pipelines (:mod:`rrjobs.processes`); ``0`` is the
    #: number of CPUs
    processes: int = Field(default=1, ge=0, validate_default=True)

    @field_validator("num_workers", "processes")
    @classmethod
    def _cpus(cls, value: int) -> int:
        """``0`` means one per CPU, as RoadRunner's ``num_workers``."""
        return value or os.cpu_count() or 1


class RetryConfig(StrictModel):
    """``jobs.pipelines.<name>.retry``: what a handler exception does.

    The job is requeued with exponential backoff until it has failed
    ``max_attempts`` times; then it goes to ``dead_letter`` (a pipeline name)
    when set, otherwise to the driver's own dead-letter (``nack(requeue=False)``),
    which drops it on drivers without one, with an error log line.
    """

    max_attempts: int = Field(default=3, ge=1)
    backoff: Duration = 1.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max_backoff: Duration = 60.0
    dead_letter: str | None = None


class PipelineConfig(StrictModel):
    """``jobs.pipelines.<name>``."""

    driver: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    #: seconds a handler of this pipeline may run (``0``: ``pool.supervisor.exec_ttl``)
    timeout: Duration = 0.0

    _empty_config = field_validator("config", mode="before")(
        classmethod(lambda cls, v: {} if v is None else v))  # ``config:`` alone: the defaults


class OptionsConfig(StrictModel):
    """``jobs.options``."""

    parallelism: int = Field(default=10, ge=0)


class ScheduleConfig(StrictModel):
    """``jobs.schedules.<name>``: a job pushed periodically (see
    :mod:`rrjobs.runtime.schedules`). Exactly one of ``cron`` and ``every``."""

    #: a cron expression (5 fields, UTC), e.g. ``"*/5 * * * *"``
    cron: str | None = None
    #: an interval, e.g. ``30s`` or ``1h``; ticks fall on its multiples since the epoch
    every: Duration | None = None
    pipeline: str = Field(min_length=1)
    job: str = Field(min_length=1)
    #: text (sent as UTF-8) or any YAML value (sent as JSON)
    payload: Any = None
    headers: dict[str, str | list[str]] = Field(default_factory=dict)
    priority: int = 0

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            from croniter import croniter
        except ModuleNotFoundError:  # pragma: no cover - a core dependency
            raise ValueError("cron schedules need croniter: pip install croniter") from None
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleConfig:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron and every")
        if self.every is not None and self.every <= 0:
            raise ValueError("every must be > 0")
        return self


def _schedules_map(value: Any) -> Any:
    """``jobs.schedules`` as a map by name; a list of items with ``name`` too."""
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError(f"item {i}: a schedule in a list needs a name")
            rest = {k: v for k, v in item.items() if k != "name"}
            out[item["name"]] = rest
        return out
    return value


class JobsConfig(StrictModel):
    """The ``jobs:`` section."""

    num_pollers: int | None = Field(default=None, ge=0)
    timeout: Duration = 60.0
    pipeline_size: int = Field(default=1_000_000, ge=1)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    consume: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    options: OptionsConfig = Field(default_factory=OptionsConfig)
    app: str | None = None
    #: periodic jobs by name
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    #: whether this server pushes the schedules' jobs
    schedules_enabled: bool = True
    #: a SQLite file shared by the servers where each tick is claimed once
    schedules_lock: str | None = None

    _schedules_list = field_validator("schedules", mode="before")(
        classmethod(lambda cls, v: _schedules_map(v)))

    @property
    def parallelism(self) -> int:
        return self.options.parallelism or 5


class RPCConfig(StrictModel):
    """``rpc:``: the address and the protections of the RPC (see docs/security.md)."""

    listen: str = "tcp://127.0.0.1:6001"
    #: the bearer token every call must carry (``RRJOBS_RPC_TOKEN`` overrides it)
    token: Secret | None = None
    #: ``Host`` values accepted besides the listen address (``host`` or ``host:port``)
    allowed_hosts: list[str] = Field(default_factory=list)
    #: request-body bytes held by calls in progress at once; above it, 503
    max_inflight_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    #: the directory under which a Declare through the RPC may name files
    declare_dir: str | None = None
    #: also serve RoadRunner's goridge RPC on ``listen`` (it has no token):
    #: ``unix`` (a unix:// listen, socket 0600) or ``loopback`` (a loopback host too)
    goridge: Literal["off", "unix", "loopback"] = "off"

    @field_validator("goridge", mode="before")
    @classmethod
    def _goridge_off(cls, value: Any) -> Any:
        """YAML reads a bare ``off`` as false."""
        return "off" if value is False else value


class FileLoggerOptions(StrictModel):
    """``logs.file_logger_options`` (RoadRunner's rotating file): ``log_output``
    is the file written; rotation is left to the system (logrotate)."""

    log_output: str | None = None
    max_size: int | None = None
    max_age: int | None = None
    max_backups: int | None = None
    compress: bool | None = None


LogLevel = Literal["debug", "info", "warn", "warning", "error", "panic", "fatal"]


class LogChannel(StrictModel):
    """One logger's settings (``logs`` itself, or ``logs.channels.<name>``)."""

    mode: Literal["development", "production", "raw", "off", "none"] = "development"
    level: LogLevel | None = None
    encoding: Literal["console", "json"] | None = None
    output: str = "stderr"
    err_output: str | None = None
    line_ending: str | None = None
    file_logger_options: FileLoggerOptions | None = None

    @field_validator("output", "err_output", mode="before")
    @classmethod
    def _one_output(cls, value: Any) -> Any:
        """RoadRunner's outputs are lists (zap's output paths); rrjobs writes to one."""
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("give one output (rrjobs writes each stream to one place), "
                                 f"got {len(value)}")
            return value[0]
        return value


class LogsConfig(LogChannel):
    """``logs:`` (RoadRunner's logger). ``channels`` name RoadRunner plugins'
    loggers; ``channels.jobs`` applies to rrjobs (it wins over the top level)."""

    channels: dict[str, LogChannel] = Field(default_factory=dict)

    def effective(self) -> LogChannel:
        """The settings rrjobs applies: ``channels.jobs`` when given, else the top level."""
        return self.channels.get("jobs") or self


#: RoadRunner's default ``metrics.address``.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:2112"


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` as RoadRunner's ``metrics.address`` (Go's ``net.Listen``) takes
    it: ``127.0.0.1:2112``, ``localhost:2112``, ``[::1]:2112``, or ``:2112`` (empty
    host: every interface). Port ``0`` asks the OS for a free port. Raises
    ``ValueError`` for anything else."""
    hint = "expected host:port, e.g. 127.0.0.1:2112"
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or "/" in text:
        raise ValueError(f"{hint}, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets ([::1]:2112), got {text!r}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"invalid port in {text!r} (0-65535)")
    return host, int(port_text)


class MetricsConfig(StrictModel):
    """``metrics:`` (RoadRunner's metrics plugin): when the section is present,
    ``rrjobs serve`` serves Prometheus metrics on ``http://<address>/metrics``."""

    address: str = DEFAULT_METRICS_ADDRESS
    #: application metrics RoadRunner's PHP workers feed over its RPC: nothing feeds
    #: them here (a Python application uses prometheus_client); accepted and ignored
    collect: dict[str, Any] | None = None

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        parse_host_port(value)
        return value.strip()

    def host_port(self) -> tuple[str, int]:
        """The address as ``(host, port)``; an empty host means every interface."""
        return parse_host_port(self.address)


#: The dashboard's default address: this machine only.
DEFAULT_DASHBOARD_LISTEN = "127.0.0.1:6002"


class DashboardConfig(StrictModel):
    """``dashboard:``: the web dashboard served by ``rrjobs serve`` (see
    docs/operations.md). Off unless ``enabled`` (or ``serve --dashboard``)."""

    enabled: bool = False
    #: ``host:port``; an empty host is 127.0.0.1 (every interface must be asked
    #: for explicitly: ``0.0.0.0:6002``); port 0 takes a free port
    listen: str = DEFAULT_DASHBOARD_LISTEN
    #: the bearer token every API call and the event stream need; unset: the
    #: RPC token (``RRJOBS_RPC_TOKEN``, else ``rpc.token``) if there is one
    token: Secret | None = None
    #: seconds between two updates pushed to the page
    interval: Duration = Field(default=1.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, port = parse_host_port(value)
        return f"{host or '127.0.0.1'}:{port}" if ":" not in host else f"[{host}]:{port}"

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token(cls, value: Any) -> Any:
        return None if value is None or (isinstance(value, str) and not value.strip()) \
            else value

    def host_port(self) -> tuple[str, int]:
        return parse_host_port(self.listen)


# -- the loaded file ------------------------------------------------------------------------


#: Top-level sections rrjobs validates itself.
VALIDATED_SECTIONS = ("version", "rpc", "jobs", "metrics", "logs", "dashboard")

#: RoadRunner's other top-level sections (its plugins): a RoadRunner file
#: loads with them; rrjobs ignores them (one INFO line names those present).
ROADRUNNER_SECTIONS = (
    "server", "http", "grpc", "tcp", "kv", "service", "reload", "status", "temporal",
    "centrifuge", "fileserver", "headers", "gzip", "static", "redis", "memcached",
    "informer", "resetter", "otel", "endure", "lock", "websockets", "broadcast",
    "include", "experimental", "api", "beanstalk", "fastcgi", "ssl", "http2", "http3",
    "middleware", "uploads", "pool", "proxy_ip_parser", "sendremotefile", "prometheus",
    "appLogger", "app_logger", "nats_kv", "boltdb_kv", "jobs_otel",
)


def driver_names() -> list[str]:
    """The names of the installed drivers (entry points; nothing is imported)."""
    from importlib.metadata import entry_points

    from rrjobs.registry import GROUP

    return sorted({ep.name for ep in entry_points(group=GROUP)})


class Config:
    """A loaded configuration: the raw tree plus the validated sections.

    Implements :class:`~rrjobs.core.interfaces.Configurer`. Read-only after load;
    safe to share. Every problem in the file is reported at once, in one
    :class:`ConfigError` (``problems``). ``drivers``: the names of the
    installed drivers, whose top-level sections are theirs (default: from the
    entry points).
    """

    def __init__(self, data: Mapping[str, Any] | None = None, *, source: str = "<dict>",
                 drivers: Iterable[str] | None = None,
                 problems: Sequence[tuple[str, str]] = ()) -> None:
        self.source = source
        self.data: dict[str, Any] = dict(data or {})
        remember_tree(self.data)  # masked in every log record from now on
        found: list[tuple[str, str]] = list(problems)
        if "jobs" not in self.data:
            found.append(("jobs", "the jobs section is required"))
        self.jobs: JobsConfig = self._section(JobsConfig, "jobs", found)
        self.rpc: RPCConfig = self._section(RPCConfig, "rpc", found)
        #: ``None`` without a ``metrics:`` section (no metrics endpoint)
        self.metrics: MetricsConfig | None = (
            self._section(MetricsConfig, "metrics", found) if "metrics" in self.data else None)
        self.dashboard: DashboardConfig = self._section(DashboardConfig, "dashboard", found)
        #: ``None`` without a ``logs:`` section
        self.logs: LogsConfig | None = (
            self._section(LogsConfig, "logs", found) if "logs" in self.data else None)
        self.driver_sections = self._check_top_level(
            driver_names() if drivers is None else list(drivers), found)
        self._check_consume(found)
        self._check_schedules(found)
        if found:
            raise ConfigError(found[0][0], found[0][1], found)
        self._report_meaningless()

    def _section(self, model: type[M], key: str, found: list[tuple[str, str]]) -> M:
        try:
            return validate_model(model, self.data.get(key), key)
        except ConfigError as exc:
            found.extend(exc.problems)
            return model.model_construct()

    def _check_top_level(self, drivers: list[str], found: list[tuple[str, str]]) -> list[str]:
        ignored: list[str] = []
        owned: list[str] = []
        known = [*VALIDATED_SECTIONS, *drivers]
        for key in self.data:
            name = str(key)
            if name in VALIDATED_SECTIONS:
                continue
            if name in drivers:
                owned.append(name)
            elif name in ROADRUNNER_SECTIONS:
                ignored.append(name)
            elif hint := suggest(name, known):
                found.append((name, f"unknown section{hint}"))
            else:
                log.warning("%s: not a section rrjobs or RoadRunner knows; ignored", name)
        if ignored:
            log.info("RoadRunner sections not used by rrjobs, ignored: %s", ", ".join(ignored))
        return owned

    def _check_schedules(self, found: list[tuple[str, str]]) -> None:
        pipelines = list(getattr(self.jobs, "pipelines", None) or {})
        for name, sched in (getattr(self.jobs, "schedules", None) or {}).items():
            if sched.pipeline not in pipelines:
                found.append((f"jobs.schedules.{name}.pipeline",
                              f"unknown pipeline {sched.pipeline!r}"
                              f"{suggest(sched.pipeline, pipelines)}; pipelines in the file: "
                              f"{', '.join(pipelines) or 'none'}"))

    def _check_consume(self, found: list[tuple[str, str]]) -> None:
        raw = self.data.get("jobs")
        if not isinstance(raw, dict):
            return
        pipes, consume = raw.get("pipelines"), raw.get("consume")
        if not isinstance(consume, list):
            return
        pipelines = [str(p) for p in pipes] if isinstance(pipes, dict) else []
        for i, name in enumerate(consume):
            if not isinstance(name, str) or name in pipelines:
                continue
            where = f"jobs.consume[{i}]"
            hint = suggest(name, pipelines)
            if hint:  # a typo of a pipeline of the file
                found.append((where, f"unknown pipeline {name!r}{hint}; pipelines in the "
                                     f"file: {', '.join(pipelines)}"))
            else:  # as in RoadRunner: a pipeline declared at run time, started then
                log.warning("%s: %r is not a pipeline of the file (pipelines: %s); it starts "
                            "when a pipeline of that name is declared", where, name,
                            ", ".join(pipelines) or "none")

    def _report_meaningless(self) -> None:
        """One INFO line naming the RoadRunner settings that mean nothing in Python."""
        pool = self.jobs.pool
        keys = [f"jobs.pool.{key}" for key in PHP_POOL_KEYS if getattr(pool, key) is not None]
        sup = pool.supervisor
        keys += [f"jobs.pool.supervisor.{key}" for key in SUPERVISOR_PHP_KEYS
                 if getattr(sup, key) is not None]
        if self.jobs.num_pollers is not None:
            keys.append("jobs.num_pollers")
        if self.metrics is not None and self.metrics.collect:
            keys.append("metrics.collect")
        if keys:
            log.info("RoadRunner settings without meaning in rrjobs (PHP workers, RoadRunner's "
                     "pollers and application metrics), ignored: %s", ", ".join(keys))

    # Configurer ---------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[bool, Any]:
        node: Any = self.data
        if not key:
            return True, node
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return False, None
        return True, node

    def has(self, key: str) -> bool:
        return self._lookup(key)[0]

    def get(self, key: str, default: Any = None) -> Any:
        found, value = self._lookup(key)
        return value if found else default

    def unmarshal_key(self, key: str, model: type[M]) -> M:
        return validate_model(model, self.get(key), key)

    # Loading ------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, env: Mapping[str, str] | None = None,
                  source: str = "<string>") -> Config:
        expanded, problems = parse_tree(text, env=env, source=source)
        return cls(expanded, source=source, problems=problems)

    @classmethod
    def load(cls, path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
        return cls.from_yaml(read_file(path), env=env, source=str(Path(path)))
