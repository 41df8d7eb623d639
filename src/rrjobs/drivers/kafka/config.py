"""Options of the ``kafka`` driver, with RoadRunner's key names and defaults.

Two places configure it:

* the global ``kafka:`` section (:class:`KafkaSection`): brokers, ping
  timeout, TLS and SASL, shared by every Kafka pipeline;
* each pipeline's options (:class:`KafkaOptions`): ``priority``,
  ``auto_create_topics_enable``, ``producer_options``, ``consumer_options``,
  ``group_options`` (and ``sasl_options``), as mappings in the config file or
  as the JSON strings ``Declare`` sends.

Every option is either honoured or refused with a message saying why: the
options aiokafka has no equivalent for (``aws_msk_iam``, ``LeastBackup``,
``WithEpoch`` offsets, ...) are validation errors, never ignored. Nothing here
touches the network or imports aiokafka.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, json_map
from rrjobs.core.tls import TLSConfig

DEFAULT_BROKERS = ["127.0.0.1:9092"]
DEFAULT_PRIORITY = 10
#: franz-go's default ``ProducerBatchMaxBytes`` (RoadRunner's ``max_message_bytes``).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_012
#: Jobs a consumer holds unsettled (fetched, queued or in a handler) at once.
DEFAULT_PREFETCH = 500
#: Delayed records a forwarder reads ahead and keeps scheduled in memory at most.
DEFAULT_DELAY_BUFFER = 10_000
#: How long a consumer's fetches or commits may keep failing before the pipeline restarts.
DEFAULT_ERROR_TIMEOUT = 60.0
#: aiokafka's default metadata refresh period (``metadata_max_age_ms``), in seconds.
DEFAULT_METADATA_MAX_AGE = 300.0

RequiredAcks = Literal["NoAck", "LeaderAck", "AllISRAck"]
Compression = Literal["gzip", "snappy", "lz4", "zstd"]
Partitioning = Literal["Manual", "Uniform", "RoundRobin", "LeastBackup", "Sticky"]
OffsetType = Literal["AtStart", "AtEnd", "At", "AfterMilli", "Relative", "WithEpoch"]
Mechanism = Literal["plain", "SCRAM-SHA-256", "SCRAM-SHA-512", "aws_msk_iam"]


# -- the global section ---------------------------------------------------------------------


class PingOptions(StrictModel):
    """``kafka.ping``: how long building a driver may wait for the brokers."""

    timeout: Duration = 10.0


class TLSOptions(TLSConfig):
    """``kafka.tls``: TLS to the brokers (the ``SSL`` or ``SASL_SSL`` protocol);
    the keys of :class:`~rrjobs.core.tls.TLSConfig`, plus:

    Attributes:
        timeout: RoadRunner's TLS dial timeout. aiokafka has no separate TLS
            handshake timeout, so a value is refused (connections are bounded
            by ``ping.timeout`` and ``producer_options.request_timeout``).
    """

    timeout: Duration | None = None

    @model_validator(mode="after")
    def _check_timeout(self) -> TLSOptions:
        if self.timeout is not None:
            raise ValueError("tls.timeout is not supported: aiokafka has no TLS handshake "
                             "timeout (ping.timeout bounds the first connection)")
        return self


class SASLOptions(StrictModel):
    """``kafka.sasl`` (and a pipeline's ``sasl_options``): SASL authentication.

    ``plain``, ``SCRAM-SHA-256`` and ``SCRAM-SHA-512`` with ``username`` and
    ``password``. RoadRunner's ``aws_msk_iam`` mechanism and the franz-go
    specific ``nonce``, ``is_token`` and ``zid`` have no aiokafka equivalent
    and are refused.
    """

    mechanism: Mechanism = "plain"
    username: str = ""
    password: str = ""
    nonce: str = ""
    is_token: bool = False
    zid: str = ""
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    user_agent: str = ""

    @field_validator("mechanism", mode="before")
    @classmethod
    def _mechanism(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() == "plain":
            return "plain"
        if isinstance(value, str) and value.upper().startswith("SCRAM-"):
            return value.upper()
        return value

    @model_validator(mode="after")
    def _check(self) -> SASLOptions:
        if self.mechanism == "aws_msk_iam":
            raise ValueError("mechanism aws_msk_iam is not supported by aiokafka; use SCRAM or "
                             "plain")
        for name in ("nonce", "zid", "access_key", "secret_key", "session_token", "user_agent"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported with aiokafka (mechanism "
                                 f"{self.mechanism})")
        if self.is_token:
            raise ValueError("is_token (SCRAM delegation tokens) is not supported by aiokafka")
        if not self.username:
            raise ValueError(f"username is required for mechanism {self.mechanism}")
        return self


class KafkaSection(StrictModel):
    """The global ``kafka:`` section.

    Attributes:
        brokers: bootstrap brokers, ``host:port`` (a list, or one
            comma-separated string).
        ping: ``timeout`` for reaching the brokers when a driver is built.
        tls: TLS settings (``SSL``, or ``SASL_SSL`` with ``sasl``).
        sasl: SASL settings (``SASL_PLAINTEXT``, or ``SASL_SSL`` with ``tls``).
    """

    brokers: list[str] = Field(default_factory=lambda: list(DEFAULT_BROKERS))
    ping: PingOptions = Field(default_factory=PingOptions)
    tls: TLSOptions | None = None
    sasl: SASLOptions | None = None

    @field_validator("brokers", mode="before")
    @classmethod
    def _brokers(cls, value: Any) -> Any:
        if value is None or value == "" or value == []:
            return list(DEFAULT_BROKERS)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _no_scheme(cls, value: list[str]) -> list[str]:
        return [b.split("://", 1)[-1] for b in value]


# -- pipeline options -------------------------------------------------------------------------


class ProducerOptions(DeclaredOptions):
    """``producer_options``.

    Attributes:
        disable_idempotent: turn off the idempotent producer (on by default,
            as in franz-go); it must be off for ``required_acks`` other than
            ``AllISRAck``.
        required_acks: ``AllISRAck`` (default), ``LeaderAck`` or ``NoAck``.
            With ``NoAck`` a push returns before the broker has the job: such
            a pipeline does not declare the ``durable`` capability.
        max_message_bytes: the largest record batch sent (aiokafka's
            ``max_request_size``); payloads above it less a header reserve are
            refused with ``PayloadTooLargeError``.
        request_timeout: per request (aiokafka's ``request_timeout_ms``).
        delivery_timeout: how long a push waits for the broker's
            acknowledgement in total; ``0`` = no bound beyond the retries.
        compression_codec: ``gzip``, ``snappy``, ``lz4`` or ``zstd``; the last
            three need the ``cramjam`` package (aiokafka's codecs) and are
            refused at this key without it.
        partitioning_strategy: ``Uniform`` (default: murmur2 of the record
            key, the job id, so jobs spread evenly), ``RoundRobin``, or
            ``Manual`` (``Message.partition``). ``Sticky`` and
            ``LeastBackup`` are franz-go internals aiokafka has not: refused.
        transaction_timeout: refused: the driver does not use transactions.
    """

    disable_idempotent: bool = False
    required_acks: RequiredAcks = "AllISRAck"
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=16_384)
    request_timeout: Duration = 10.0
    delivery_timeout: Duration = 0.0
    compression_codec: Compression | None = None
    partitioning_strategy: Partitioning = "Uniform"
    transaction_timeout: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> ProducerOptions:
        if self.transaction_timeout is not None:
            raise ValueError("transaction_timeout is not supported: the kafka driver does not "
                             "use transactions")
        if self.partitioning_strategy in ("Sticky", "LeastBackup"):
            raise ValueError(f"partitioning_strategy {self.partitioning_strategy} is not "
                             "supported by aiokafka; use Uniform, RoundRobin or Manual")
        if self.required_acks != "AllISRAck" and not self.disable_idempotent:
            raise ValueError(f"required_acks {self.required_acks} needs disable_idempotent: "
                             "true (the idempotent producer requires AllISRAck)")
        return self

    @field_validator("compression_codec")
    @classmethod
    def _codec(cls, value: Compression | None) -> Compression | None:
        if value is not None:
            _check_codec(value)
        return value


def _check_codec(codec: str) -> None:
    """Refuse a compression codec whose library is not installed (aiokafka compresses
    gzip with the standard library, and snappy, lz4 and zstd with ``cramjam``)."""
    import importlib.util

    if codec == "gzip":
        return
    if importlib.util.find_spec("cramjam") is None:
        raise ValueError(f"{codec} needs the cramjam package, which is not installed "
                         "(pip install 'cramjam>=2.8'); gzip needs nothing")


class OffsetSpec(StrictModel):
    """``consumer_offset`` (and each partition of ``consume_partitions``).

    ``AtStart`` and ``AtEnd``; ``At`` (``value`` = the offset) and
    ``AfterMilli`` (``value`` = a unix time in ms: the first record at or
    after it). franz-go's ``Relative`` and ``WithEpoch`` have no aiokafka
    equivalent and are refused.
    """

    type: OffsetType = "AtStart"
    value: int = 0

    @model_validator(mode="after")
    def _check(self) -> OffsetSpec:
        if self.type in ("Relative", "WithEpoch"):
            raise ValueError(f"offset type {self.type} is not supported by aiokafka; use "
                             "AtStart, AtEnd, At or AfterMilli")
        if self.type in ("At", "AfterMilli") and self.value < 0:
            raise ValueError(f"offset {self.type} needs a value >= 0")
        return self


class ConsumerOptions(DeclaredOptions):
    """``consumer_options``.

    Attributes:
        topics: the topics consumed (with a group, or every partition without).
        consume_regexp: ``topics`` are regular expressions (needs a group).
        consume_partitions: ``{topic: {partition: {type, value}}}``: exactly
            these partitions from these offsets, without a group.
        max_fetch_message_size: aiokafka's ``fetch_max_bytes``.
        min_fetch_message_size: aiokafka's ``fetch_min_bytes``.
        consumer_offset: where to start when no offset is committed.
        metadata_max_age: rrjobs: how often the consumer refreshes the cluster
            metadata (aiokafka's ``metadata_max_age_ms``, default 5 minutes).
            With ``consume_regexp`` it bounds how long a new matching topic
            waits before it is consumed.
    """

    topics: list[str] = Field(default_factory=list)
    consume_regexp: bool = False
    consume_partitions: dict[str, dict[int, OffsetSpec]] = Field(default_factory=dict)
    max_fetch_message_size: int = Field(default=52_428_800, ge=1)
    min_fetch_message_size: int = Field(default=1, ge=1)
    consumer_offset: OffsetSpec = Field(default_factory=OffsetSpec)
    metadata_max_age: Duration = DEFAULT_METADATA_MAX_AGE

    @field_validator("topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("metadata_max_age")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @model_validator(mode="after")
    def _check(self) -> ConsumerOptions:
        if self.topics and self.consume_partitions:
            raise ValueError("give topics or consume_partitions, not both (aiokafka cannot "
                             "mix subscribed topics with assigned partitions)")
        if self.consume_regexp:
            if not self.topics:
                raise ValueError("consume_regexp needs topics (the regular expressions)")
            for pattern in self.topics:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"topics: {pattern!r} is not a regular expression: "
                                     f"{exc}") from None
        return self


class GroupOptions(StrictModel):
    """``group_options``: consume as a member of a consumer group.

    Attributes:
        group_id: the group (required).
        instance_id: static membership (``group.instance.id``).
        block_rebalance_on_poll: refused when true: the driver always lets the
            jobs of revoked partitions finish (or abandons them) before a
            rebalance completes, see the driver's documentation.
        commit_interval: rrjobs: how often acknowledged offsets are committed
            (the contiguous acknowledged prefix of each partition).
        session_timeout, heartbeat_interval: rrjobs: the group session
            timeout and heartbeat interval (aiokafka's defaults, 10 s and 3 s).
        revoke_timeout: rrjobs: how long a rebalance waits for the jobs of
            revoked partitions that handlers hold; after it they are abandoned
            (their settlement is refused, another member gets them again).
    """

    group_id: str = Field(min_length=1)
    instance_id: str = ""
    block_rebalance_on_poll: bool = False
    commit_interval: Duration = 0.2
    session_timeout: Duration = 10.0
    heartbeat_interval: Duration = 3.0
    revoke_timeout: Duration = 10.0

    @model_validator(mode="after")
    def _check(self) -> GroupOptions:
        if self.block_rebalance_on_poll:
            raise ValueError("block_rebalance_on_poll is not supported: the kafka driver "
                             "always finishes or abandons the jobs of revoked partitions "
                             "before a rebalance completes")
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        return self


class KafkaOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: kafka`` (and ``Declare``'s keys).

    RoadRunner's keys, plus these rrjobs keys:

    Attributes:
        prefetch: the most jobs this consumer holds unsettled at once; at the
            limit, fetching pauses.
        delay_buffer: the most delayed records the delay forwarder reads ahead
            and keeps scheduled in memory; at the limit it pauses its
            partitions until one is forwarded.
        error_timeout: how long the consumer's fetches or commits (and the
            delay forwarder's) may keep failing with retriable errors before
            the driver asks the runtime to restart the pipeline; ``0``: never
            for retriable errors. A non-retriable client error restarts it at
            once.
        delay_topic: the topic that keeps delayed jobs (default
            ``<first topic>.rrjobs-delayed``).
        dead_letter_topic: ``nack()`` without requeue produces the job here;
            empty (default) drops it.
    """

    priority: int = DEFAULT_PRIORITY
    auto_create_topics_enable: bool = False
    producer_options: ProducerOptions = Field(default_factory=ProducerOptions)
    consumer_options: ConsumerOptions = Field(default_factory=ConsumerOptions)
    group_options: GroupOptions | None = None
    sasl_options: SASLOptions | None = None
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1)
    delay_buffer: int = Field(default=DEFAULT_DELAY_BUFFER, gt=0)
    error_timeout: Duration = DEFAULT_ERROR_TIMEOUT
    delay_topic: str = ""
    dead_letter_topic: str = ""

    @field_validator("producer_options", "consumer_options", "group_options", "sasl_options",
                     mode="before")
    @classmethod
    def _decode(cls, value: Any) -> Any:
        return json_map(value)

    @model_validator(mode="after")
    def _check(self) -> KafkaOptions:
        consumer = self.consumer_options
        if consumer.consume_partitions and self.group_options is not None:
            raise ValueError("consume_partitions cannot be used with group_options (assigned "
                             "partitions are consumed without a group)")
        if consumer.consume_regexp and self.group_options is None:
            raise ValueError("consume_regexp needs group_options")
        return self

    # -- derived ------------------------------------------------------------------------

    def main_topics(self) -> list[str]:
        """The topics consumed by name (not the regular expressions)."""
        consumer = self.consumer_options
        if consumer.consume_regexp:
            return []
        return list(consumer.topics) or list(consumer.consume_partitions)

    def default_topic(self) -> str:
        """Where a push without ``Message.topic`` goes ("" when there is none)."""
        topics = self.main_topics()
        return topics[0] if topics else ""

    def resolved_delay_topic(self) -> str:
        """The delay topic, or "" when delays are unavailable (no topic to derive it)."""
        if self.delay_topic:
            return self.delay_topic
        default = self.default_topic()
        return f"{default}.rrjobs-delayed" if default else ""
