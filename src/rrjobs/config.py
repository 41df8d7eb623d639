"""Loading a RoadRunner-style ``.rr.yaml``.

* ``${VAR}`` and ``${VAR:-default}`` are expanded in every string value, as
  RoadRunner does; ``$$`` is a literal ``$``. The environment is read when the
  file is loaded, never at import time.
* The ``jobs:`` section is validated strictly: an unknown key or a bad value is
  a :class:`~rrjobs.core.errors.ConfigError` whose message starts with the exact
  key path (``jobs.pipelines.test-1.config.prefetch: must be ≥ 1``).
* The ``metrics:`` section (RoadRunner's metrics plugin) is validated as
  strictly (:class:`MetricsConfig`); without it there is no metrics endpoint.
* So is ``dashboard:`` (:class:`DashboardConfig`, rrjobs' web dashboard, off
  unless ``enabled``).
* Other top-level sections (``rpc``, ``server``, ``logs``, ...) load as they
  are; driver sections such as ``amqp:`` are validated by their driver through
  :meth:`Config.unmarshal_key`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from rrjobs.core.errors import ConfigError
from rrjobs.core.options import Duration, StrictModel, validate

log = logging.getLogger("rrjobs.config")

M = TypeVar("M", bound=BaseModel)

# -- environment expansion -------------------------------------------------------------

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``; ``$$`` is ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            return default if default is not None else ""
        return got

    return _ENV.sub(sub, value)


def _expand_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return expand_env(node, env)
    if isinstance(node, dict):
        return {k: _expand_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, env) for v in node]
    return node


# -- the models ---------------------------------------------------------------------------


#: Keys of RoadRunner's worker pool that configure PHP processes. They are
#: accepted so that a RoadRunner file loads, and each one set is reported with a
#: warning at load time: rrjobs has no PHP workers to apply them to.
PHP_POOL_KEYS = (
    "command",
    "debug",
    "reset_timeout",
    "stream_timeout",
    "max_queue_size",
    "dynamic_allocator",
)


class SupervisorConfig(StrictModel):
    """``jobs.pool.supervisor``. Only ``exec_ttl`` applies to rrjobs."""

    exec_ttl: Duration = 0.0
    watch_tick: Duration | None = None
    ttl: Duration | None = None
    idle_ttl: Duration | None = None
    max_worker_memory: int | None = None


class PoolConfig(StrictModel):
    """``jobs.pool``: the handler worker pool."""

    num_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
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


class OptionsConfig(StrictModel):
    """``jobs.options``."""

    parallelism: int = Field(default=10, ge=0)


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

    @property
    def parallelism(self) -> int:
        return self.options.parallelism or 5


class RPCConfig(BaseModel):
    """``rpc:``: the address and the protections of the RPC (see docs/security.md)."""

    model_config = ConfigDict(extra="allow")
    listen: str = "tcp://127.0.0.1:6001"
    #: the bearer token every call must carry (``RRJOBS_RPC_TOKEN`` overrides it)
    token: SecretStr | None = None
    #: ``Host`` values accepted besides the listen address (``host`` or ``host:port``)
    allowed_hosts: list[str] = Field(default_factory=list)
    #: request-body bytes held by calls in progress at once; above it, 503
    max_inflight_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    #: the directory under which a Declare through the RPC may name files
    declare_dir: str | None = None


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
    collect: None = None

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        parse_host_port(value)
        return value.strip()

    @field_validator("collect", mode="before")
    @classmethod
    def _refuse_collect(cls, value: Any) -> None:
        if value:
            raise ValueError(
                "application metrics declared in the config are not supported by rrjobs "
                "(RoadRunner's PHP workers feed them over RPC); remove this key"
            )
        return None

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
    token: SecretStr | None = None
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


class Config:
    """A loaded configuration: the raw tree plus the validated ``jobs`` section.

    Implements :class:`~rrjobs.core.interfaces.Configurer`. Read-only after load;
    safe to share.
    """

    def __init__(self, data: Mapping[str, Any] | None = None, *, source: str = "<dict>") -> None:
        self.source = source
        self.data: dict[str, Any] = dict(data or {})
        if "jobs" not in self.data:
            raise ConfigError("jobs", "the jobs section is required")
        self.jobs = validate(JobsConfig, self.data.get("jobs"), "jobs")
        self.rpc = validate(RPCConfig, self.data.get("rpc"), "rpc")
        #: ``None`` without a ``metrics:`` section (no metrics endpoint)
        self.metrics = (validate(MetricsConfig, self.data["metrics"], "metrics")
                        if "metrics" in self.data else None)
        self.dashboard = validate(DashboardConfig, self.data.get("dashboard"), "dashboard")
        self._warn_php_keys()

    def _warn_php_keys(self) -> None:
        pool = self.jobs.pool
        for key in PHP_POOL_KEYS:
            if getattr(pool, key) is not None:
                log.warning("jobs.pool.%s: configures PHP workers; rrjobs does not use it", key)
        sup = pool.supervisor
        for key in ("watch_tick", "ttl", "idle_ttl", "max_worker_memory"):
            if getattr(sup, key) is not None:
                log.warning(
                    "jobs.pool.supervisor.%s: configures PHP workers; rrjobs does not use it", key
                )
        if self.jobs.num_pollers is not None:
            log.warning(
                "jobs.num_pollers: deprecated (as in RoadRunner); concurrency is "
                "jobs.pool.num_workers"
            )

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
        return validate(model, self.get(key), key)

    # Loading ------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, env: Mapping[str, str] | None = None,
                  source: str = "<string>") -> Config:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("", f"{source}: invalid YAML: {exc}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError("", f"{source}: the top level must be a mapping")
        expanded = _expand_tree(raw, os.environ if env is None else env)
        return cls(expanded, source=source)

    @classmethod
    def load(cls, path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("", f"cannot read config {p}: {exc.strerror}") from None
        return cls.from_yaml(text, env=env, source=str(p))
