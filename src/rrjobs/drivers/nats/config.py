"""Options of the ``nats`` driver, with RoadRunner's key names and defaults.

Two places configure it:

* the global ``nats:`` section (:class:`NATSSection`): the server address
  (and TLS), shared by every NATS pipeline;
* each pipeline's options (:class:`NATSOptions`), in the config file or as
  the string map ``Declare`` sends (``"true"``, ``"10"``, ``"30s"``).

RoadRunner parses ``deliver_new`` and ``rate_limit`` but never uses them;
rrjobs honours both (``DeliverPolicy.NEW`` and a client-side delivery rate),
so a value is never accepted and then ignored. Nothing here touches the
network or imports nats-py.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel
from rrjobs.core.tls import TLSConfig

DEFAULT_ADDR = "nats://127.0.0.1:4222"
DEFAULT_PRIORITY = 10
DEFAULT_SUBJECT = "default"
DEFAULT_STREAM = "default-stream"
#: ``prefetch`` of a pipeline from the config file (RoadRunner's default) ...
DEFAULT_PREFETCH = 10
#: ... and of a declared one (RoadRunner's ``Declare`` default).
DEFAULT_DECLARE_PREFETCH = 100
DEFAULT_ACK_WAIT = 30.0

#: What JetStream accepts in a stream or consumer name.
_NAME = re.compile(r"^[^.*>\s/\\]+$")
#: A literal subject: tokens separated by dots, no wildcards, no spaces.
_SUBJECT = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")


class NATSSection(StrictModel):
    """The global ``nats:`` section.

    Attributes:
        addr: the server URL (``nats://host:4222``, ``tls://host:4222``);
            several servers separated by commas.
        tls: TLS settings (the client certificate and the CA that verifies
            the server).
    """

    addr: str = DEFAULT_ADDR
    tls: TLSConfig | None = None

    @field_validator("addr", mode="before")
    @classmethod
    def _default_addr(cls, value: Any) -> Any:
        return DEFAULT_ADDR if value in (None, "") else value

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        for server in value.split(","):
            scheme = server.strip().split("://", 1)[0].lower() if "://" in server else ""
            if scheme not in ("nats", "tls", "ws", "wss"):
                raise ValueError(f"addr must be a nats:// or tls:// URL, got {server.strip()!r}")
        return value

    def servers(self) -> list[str]:
        """The server URLs of ``addr``."""
        return [s.strip() for s in self.addr.split(",") if s.strip()]


class NATSOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: nats`` (and ``Declare``'s keys).

    RoadRunner's keys:

    Attributes:
        priority: the pipeline priority (lower runs first).
        subject: the subject jobs are published to and consumed from.
        stream: the JetStream stream holding ``subject`` (created when
            missing; ``subject`` is added to an existing stream that lacks it).
        prefetch: the most jobs the consumer holds unacknowledged
            (JetStream ``max_ack_pending``); fetches ask for up to this many.
        deliver_new: a consumer created by this pipeline starts with the
            messages published after it (``DeliverPolicy.NEW``) instead of
            everything in the stream. Set explicitly against an existing
            consumer with another deliver policy: a ``ConfigError``.
        rate_limit: the most jobs per second this driver takes from the
            broker (client-side); unset: no limit.
        delete_after_ack: delete each acknowledged message from the stream.
        delete_stream_on_stop: delete the stream (and the delay stream) when
            the pipeline stops.
        ack_wait: how long JetStream waits for an acknowledgement before it
            redelivers (the job's lease; the worker pool extends it).

    rrjobs keys:

    Attributes:
        consumer: the durable pull consumer's name; every driver with the same
            name shares the work (default ``rrjobs-<stream>-<subject>``).
        delay_stream: the stream that keeps delayed jobs until due (default
            ``<stream>-rrjobs-delayed``, work-queue retention).
        dead_letter_subject: ``nack()`` without requeue publishes the job here
            (a subject of any stream; when none holds it, the stream
            ``<stream>-dlq`` is created for it); empty (default) drops it (logged).
    """

    priority: int = DEFAULT_PRIORITY
    subject: str = DEFAULT_SUBJECT
    stream: str = DEFAULT_STREAM
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1)
    deliver_new: bool = False
    rate_limit: int | None = Field(default=None, gt=0)
    delete_after_ack: bool = False
    delete_stream_on_stop: bool = False
    ack_wait: Duration = DEFAULT_ACK_WAIT
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

    @field_validator("ack_wait")
    @classmethod
    def _check_ack_wait(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("must be at least 100ms")
        return value

    @model_validator(mode="after")
    def _check(self) -> NATSOptions:
        if self.dead_letter_subject == self.subject:
            raise ValueError("dead_letter_subject must differ from subject")
        if self.delay_stream and self.delay_stream == self.stream:
            raise ValueError("delay_stream must differ from stream")
        return self

    def consumer_name(self) -> str:
        """The durable consumer's name."""
        return self.consumer or _safe(f"rrjobs-{self.stream}-{self.subject}")

    def delay_stream_name(self) -> str:
        """The delay stream's name."""
        return self.delay_stream or f"{self.stream}-rrjobs-delayed"

    def delay_subject(self) -> str:
        """This pipeline's subject in the delay stream (never inside ``subject``'s stream)."""
        return f"rrjobs-delayed.{self.delay_stream_name()}.{self.subject}"

    def delay_subjects(self) -> str:
        """The delay stream's subjects: those of every pipeline sharing it (each
        forwarder consumer filters on its own ``delay_subject``)."""
        return f"rrjobs-delayed.{self.delay_stream_name()}.>"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the stream subject ``pattern`` (``*`` one token, ``>`` the rest) covers
    the literal ``subject``."""
    want = subject.split(".")
    for i, token in enumerate(pattern.split(".")):
        if token == ">":
            return len(want) > i
        if i >= len(want) or (token != "*" and token != want[i]):
            return False
    return len(want) == len(pattern.split("."))


def _safe(name: str) -> str:
    """``name`` with the characters JetStream refuses in names replaced by ``_``."""
    return re.sub(r"[.*>\s/\\]", "_", name)
