"""Options of the ``nats`` driver, with RoadRunner's key names and defaults (every key:
``docs/drivers/nats.md``): the global ``nats:`` section and each pipeline's options.
No network, no nats-py.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, Duration, ExistingFile, StrictModel, or_default
from rrjobs.core.secret_types import SecretURL, URLSecret, url_scheme
from rrjobs.core.secrets import redact_url
from rrjobs.core.tls import TLSConfig, optional_tls

DEFAULT_ADDR = "nats://127.0.0.1:4222"
DEFAULT_PRIORITY = 10
DEFAULT_SUBJECT = "default"
DEFAULT_STREAM = "default-stream"
DEFAULT_PREFETCH = 10  #: ``prefetch`` of a pipeline from the config file (RoadRunner's)
DEFAULT_DECLARE_PREFETCH = 100  #: ... and of a declared one (RoadRunner's ``Declare``)
DEFAULT_ACK_WAIT = 30.0

_NAME = re.compile(r"^[^.*>\s/\\]+$")  #: what JetStream accepts in a stream or consumer name
_SUBJECT = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")  #: a literal subject (no wildcards, spaces)


class NATSSection(StrictModel):
    """The global ``nats:`` section: ``addr`` (server URLs, comma-separated; a
    ``user:password@`` or ``token@`` in them is shown masked), ``tls``, and
    ``credentials`` (rrjobs' own: a ``.creds`` file, a user JWT and its nkey seed,
    for servers in operator mode)."""

    addr: Annotated[SecretURL, or_default(DEFAULT_ADDR)] = URLSecret(DEFAULT_ADDR)
    tls: Annotated[TLSConfig | None, optional_tls("nats.tls")] = None
    credentials: ExistingFile = ""

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: URLSecret) -> URLSecret:
        """Each server a ``nats://``, ``tls://``, ``ws://`` or ``wss://`` URL; one
        without a scheme (``demo.nats.io``, ``host:4222``) is ``nats://``, as nats.go
        and RoadRunner read it."""
        servers = []
        for server in (s.strip() for s in value.get_secret_value().split(",")):
            if not server:
                continue
            if "://" not in server:
                server = f"nats://{server}"
            url_scheme(server, ("nats", "tls", "ws", "wss"), "a nats:// or tls:// URL")
            servers.append(server)
        joined = ",".join(servers)
        return value if joined == value.get_secret_value() else URLSecret(joined)

    def servers(self) -> list[str]:
        """The server URLs of ``addr``, credentials included (for connecting only)."""
        return [s.strip() for s in self.addr.get_secret_value().split(",") if s.strip()]

    def shown(self) -> str:
        """``addr`` with its credentials masked, for logs and errors."""
        return ",".join(map(redact_url, self.servers()))


class NATSOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: nats`` (and ``Declare``'s keys):
    RoadRunner's keys, then rrjobs' own."""

    priority: int = DEFAULT_PRIORITY
    subject: str = DEFAULT_SUBJECT
    stream: str = DEFAULT_STREAM
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1)
    deliver_new: bool = False
    rate_limit: int | None = Field(default=None, gt=0)
    delete_after_ack: bool = False
    delete_stream_on_stop: bool = False
    ack_wait: Duration = Field(default=DEFAULT_ACK_WAIT, ge=0.1)
    consumer: str = ""
    delay_stream: str = ""
    dead_letter_subject: str = ""

    @field_validator("subject", "dead_letter_subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        if value and not _SUBJECT.match(value):
            raise ValueError(f"{value!r} is not a literal NATS subject (no wildcards or spaces)")
        return value

    @field_validator("stream", "consumer", "delay_stream")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid JetStream name (no '.', '*', '>', "
                             "spaces or slashes)")
        return value

    @model_validator(mode="after")
    def _check(self) -> NATSOptions:
        if self.dead_letter_subject == self.subject:
            raise ValueError("dead_letter_subject must differ from subject")
        if self.delay_stream and self.delay_stream == self.stream:
            raise ValueError("delay_stream must differ from stream")
        return self

    def consumer_name(self) -> str:
        """The durable consumer's name (characters JetStream refuses replaced by ``_``)."""
        return self.consumer or re.sub(r"[.*>\s/\\]", "_", f"rrjobs-{self.stream}-{self.subject}")

    def delay_stream_name(self) -> str:
        """The delay stream's name."""
        return self.delay_stream or f"{self.stream}-rrjobs-delayed"

    def delay_subject(self) -> str:
        """This pipeline's subject in the delay stream (never inside ``subject``'s stream)."""
        return f"rrjobs-delayed.{self.delay_stream_name()}.{self.subject}"

    def delay_subjects(self) -> str:
        """The delay stream's subjects: those of every pipeline sharing it."""
        return f"rrjobs-delayed.{self.delay_stream_name()}.>"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether stream subject ``pattern`` (``*``: a token, ``>``: the rest) covers ``subject``."""
    want = subject.split(".")
    for i, token in enumerate(pattern.split(".")):
        if token == ">":
            return len(want) > i
        if i >= len(want) or (token != "*" and token != want[i]):
            return False
    return len(want) == len(pattern.split("."))
