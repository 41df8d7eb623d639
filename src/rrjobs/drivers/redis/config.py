"""Options of the ``redis`` driver (Redis Streams): the optional global ``redis:`` section
and each pipeline's options, also in the string form ``Declare`` sends. Every key is
described in ``docs/drivers/redis.md``.

Nothing here touches the network or imports redis-py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, comma_list, or_default
from rrjobs.core.secret_types import Secret, SecretURL, URLSecret, url_scheme
from rrjobs.core.secrets import redact_url
from rrjobs.core.tls import TLSConfig, optional_tls

DEFAULT_ADDR = "redis://127.0.0.1:6379"
DEFAULT_PRIORITY = 10
DEFAULT_PREFETCH = 100
DEFAULT_GROUP = "rrjobs"
DEFAULT_VISIBILITY = 30.0
#: A queue name: it goes inside the keys' hash tag ``{queue}``, so no braces.
QUEUE_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.:-]*)?$"


class RedisSection(StrictModel):
    """The global ``redis:`` section: ``addr`` (a ``redis://`` or ``rediss://`` URL, or
    with ``cluster: true`` comma-separated seed nodes; a password in it is shown masked),
    an ACL ``username`` and ``password``, ``tls`` and ``cluster``."""

    addr: Annotated[SecretURL, or_default(DEFAULT_ADDR)] = URLSecret(DEFAULT_ADDR)
    username: str = ""
    password: Secret = SecretStr("")
    db: int = Field(default=0, ge=0)
    cluster: bool = False
    tls: Annotated[TLSConfig | None, optional_tls("redis.tls")] = None
    dial_timeout: Annotated[Duration, Field(gt=0)] = 5.0

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: URLSecret) -> URLSecret:
        """Each node a ``redis://`` or ``rediss://`` URL; ``host:port`` is ``redis://``."""
        nodes = [n if "://" in n else f"redis://{n}" for n in comma_list(value.get_secret_value())]
        for node in nodes:
            url_scheme(node, ("redis", "rediss"), "a redis:// or rediss:// URL")
        if not nodes:
            raise ValueError("addr names no server")
        joined = ",".join(nodes)
        return value if joined == value.get_secret_value() else URLSecret(joined)

    @model_validator(mode="after")
    def _check(self) -> RedisSection:
        if len(self.nodes()) > 1 and not self.cluster:
            raise ValueError("addr names several servers: set cluster: true for Redis Cluster")
        if self.cluster and self.db:
            raise ValueError("db: Redis Cluster has only database 0")
        return self

    def nodes(self) -> list[str]:
        """The server URLs of ``addr``, credentials included (for connecting only)."""
        return [s for s in self.addr.get_secret_value().split(",") if s]

    def shown(self) -> str:
        """``addr`` with its credentials masked, for logs and errors."""
        return ",".join(map(redact_url, self.nodes()))

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or any(n.startswith("rediss://") for n in self.nodes())


class RedisOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: redis`` (and ``Declare``'s keys)."""

    priority: int = DEFAULT_PRIORITY
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1)
    #: letters, digits and ``_.:-``: no braces (the name is the keys' hash tag)
    queue: str = Field(default="", pattern=QUEUE_PATTERN)
    group: str = Field(default=DEFAULT_GROUP, min_length=1)
    consumer: str = ""
    visibility_timeout: Annotated[Duration, Field(ge=0.1)] = DEFAULT_VISIBILITY
    block: Annotated[Duration, Field(ge=0.01, le=60)] = 1.0
    priority_bands: Annotated[list[int], Field(max_length=16)] = Field(default_factory=list)
    dead_letter: bool = True
    delay_poll: Annotated[Duration, Field(ge=0.01, le=10)] = 0.1

    @field_validator("priority_bands", mode="before")
    @classmethod
    def _bands(cls, value: Any) -> Any:
        """A list, ``"1,5,10"``, or ``"[1, 5, 10]"`` (JSON, as ``Declare`` sends a list)."""
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        return comma_list(value)

    @field_validator("priority_bands")
    @classmethod
    def _check_bands(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError("priority bands must be distinct and ascending")
        return value

    def problems(self) -> list[tuple[str, str]]:
        if self.block >= self.visibility_timeout:
            return [("block", "must be shorter than visibility_timeout")]
        return []
