"""Options of the ``kafka`` driver, RoadRunner's keys and defaults (docs/drivers/kafka.md): an
option aiokafka has no equivalent for is refused, never ignored. No network, no aiokafka."""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, comma_list, json_map
from rrjobs.core.secret_types import Secret
from rrjobs.core.tls import TLSConfig, optional_tls

DEFAULT_BROKERS = ["127.0.0.1:9092"]
DEFAULT_PRIORITY = 10
#: Delayed records a forwarder reads ahead and keeps scheduled in memory at most.
DEFAULT_DELAY_BUFFER = 10_000

RequiredAcks = Literal["NoAck", "LeaderAck", "AllISRAck"]
Compression = Literal["gzip", "snappy", "lz4", "zstd"]
Partitioning = Literal["Manual", "Uniform", "RoundRobin", "LeastBackup", "Sticky"]
OffsetType = Literal["AtStart", "AtEnd", "At", "AfterMilli", "Relative", "WithEpoch"]
Mechanism = Literal["plain", "SCRAM-SHA-256", "SCRAM-SHA-512", "aws_msk_iam"]

log = logging.getLogger("rrjobs.config")


def _ignored(where: str, why: str) -> None:
    """One INFO line for a RoadRunner key that means nothing here."""
    log.info("%s: %s; ignored", where, why)


class PingOptions(StrictModel):
    """``kafka.ping``: how long building a driver may wait for the brokers."""

    timeout: Duration = 10.0


class TLSOptions(TLSConfig):
    """``kafka.tls``: :class:`~rrjobs.core.tls.TLSConfig`, and RoadRunner's ``timeout``,
    accepted with an INFO line (aiokafka bounds connecting by its request timeout)."""

    timeout: Duration | None = None

    @model_validator(mode="after")
    def _check_timeout(self) -> TLSOptions:
        if self.timeout is not None:
            _ignored("kafka.tls.timeout", "aiokafka bounds connecting by its request "
                     "timeout (producer_options.request_timeout)")
        return self


class SASLOptions(StrictModel):
    """``kafka.sasl`` and ``sasl_options``: plain or SCRAM (``zid``, ``nonce`` and the AWS
    keys: docs/drivers/kafka.md). ``password`` (and the AWS keys) are secrets: shown
    masked, never echoed."""

    mechanism: Mechanism = "plain"
    username: str = ""
    password: Secret = SecretStr("")
    nonce: str = ""
    is_token: bool = False
    zid: str = ""
    access_key: Secret = SecretStr("")
    secret_key: Secret = SecretStr("")
    session_token: Secret = SecretStr("")
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
        if self.nonce:
            _ignored("sasl.nonce", "a fixed SCRAM client nonce; aiokafka draws a random one")
        unread = [name for name in ("access_key", "secret_key", "session_token", "user_agent")
                  if getattr(self, name)]
        if unread:
            _ignored(f"sasl.{', sasl.'.join(unread)}",
                     f"aws_msk_iam's keys, unused with mechanism {self.mechanism}")
        if self.zid and self.zid != self.username:
            raise ValueError(f"zid {self.zid!r} is not supported with aiokafka: it "
                             "authorizes as the username (give zid: \"\" or the username)")
        if self.is_token:
            raise ValueError("is_token (SCRAM delegation tokens) is not supported by aiokafka")
        if not self.username:
            raise ValueError(f"username is required for mechanism {self.mechanism}")
        return self


class KafkaSection(StrictModel):
    """The global ``kafka:`` section (``brokers``: a list or one comma-separated string)."""

    brokers: list[str] = Field(default_factory=lambda: list(DEFAULT_BROKERS))
    ping: PingOptions = Field(default_factory=PingOptions)
    tls: Annotated[TLSOptions | None, optional_tls("kafka.tls")] = None
    sasl: SASLOptions | None = None

    @field_validator("brokers", mode="before")
    @classmethod
    def _brokers(cls, value: Any) -> Any:  # without a scheme (RoadRunner accepts one)
        value = list(DEFAULT_BROKERS) if value in (None, "", []) else comma_list(value)
        if isinstance(value, list):
            value = [b.split("://", 1)[-1] if isinstance(b, str) else b for b in value]
        return value


class ProducerOptions(DeclaredOptions):
    """``producer_options``."""

    disable_idempotent: bool = False
    required_acks: RequiredAcks = "AllISRAck"
    max_message_bytes: int = Field(default=1_000_012, ge=16_384)  # franz-go's batch maximum
    request_timeout: Duration = 10.0
    delivery_timeout: Duration = 0.0
    compression_codec: Compression | None = None
    partitioning_strategy: Partitioning = "Uniform"
    transaction_timeout: Duration | None = None

    @model_validator(mode="after")
    def _check(self) -> ProducerOptions:
        if self.transaction_timeout is not None:
            _ignored("producer_options.transaction_timeout", "the kafka driver uses no "
                     "transactions (nor does RoadRunner's, where only a transactional "
                     "producer reads it)")
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
        """aiokafka's snappy, lz4 and zstd need ``cramjam`` (gzip is the standard library's)."""
        if value not in (None, "gzip") and importlib.util.find_spec("cramjam") is None:
            raise ValueError(f"{value} needs the cramjam package, which is not installed "
                             "(pip install 'cramjam>=2.8'); gzip needs nothing")
        return value


class OffsetSpec(StrictModel):
    """``consumer_offset`` (or a partition's): ``value`` an offset (``At``) or unix ms."""

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
    """``consumer_options``."""

    topics: list[str] = Field(default_factory=list)
    consume_regexp: bool = False
    consume_partitions: dict[str, dict[int, OffsetSpec]] = Field(default_factory=dict)
    max_fetch_message_size: int = Field(default=52_428_800, ge=1)
    min_fetch_message_size: int = Field(default=1, ge=1)
    consumer_offset: OffsetSpec = Field(default_factory=OffsetSpec)
    metadata_max_age: Annotated[Duration, Field(gt=0)] = 300.0  # aiokafka's metadata_max_age_ms

    _topics = field_validator("topics", mode="before")(comma_list)

    @model_validator(mode="after")
    def _check(self) -> ConsumerOptions:
        if self.topics and self.consume_partitions:
            _ignored("consumer_options.consume_partitions", "topics are given, and topics "
                     "win (as in RoadRunner)")
            self.consume_partitions = {}
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
    """``group_options``: consume as a member of a consumer group."""

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
            log.info("group_options.block_rebalance_on_poll: always so here: a rebalance "
                     "waits for the handled jobs of revoked partitions (revoke_timeout) "
                     "and commits them before it completes")
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        return self


class KafkaOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: kafka`` (and ``Declare``'s keys)."""

    priority: int = DEFAULT_PRIORITY
    auto_create_topics_enable: bool = False
    producer_options: ProducerOptions = Field(default_factory=ProducerOptions)
    consumer_options: ConsumerOptions = Field(default_factory=ConsumerOptions)
    group_options: GroupOptions | None = None
    sasl_options: SASLOptions | None = None
    prefetch: int = Field(default=500, ge=1)  # jobs fetched, queued or in a handler
    delay_buffer: int = Field(default=DEFAULT_DELAY_BUFFER, gt=0)
    error_timeout: Duration = 60.0
    delay_topic: str = ""
    dead_letter_topic: str = ""

    _decode = field_validator("producer_options", "consumer_options", "group_options",
                              "sasl_options", mode="before")(json_map)

    @model_validator(mode="after")
    def _check(self) -> KafkaOptions:
        consumer = self.consumer_options
        if consumer.consume_partitions and self.group_options is not None:
            raise ValueError("consume_partitions cannot be used with group_options (assigned "
                             "partitions are consumed without a group)")
        if consumer.consume_regexp and self.group_options is None:
            raise ValueError("consume_regexp needs group_options")
        return self

    def main_topics(self) -> list[str]:
        """The topics consumed by name (not the regular expressions)."""
        c = self.consumer_options
        return [] if c.consume_regexp else list(c.topics or c.consume_partitions)

    def default_topic(self) -> str:
        """Where a push without ``Message.topic`` goes ("" when there is none)."""
        return next(iter(self.main_topics()), "")

    def resolved_delay_topic(self) -> str:
        """The delay topic, or "" when delays are unavailable (no topic to derive it)."""
        default = self.default_topic()
        return self.delay_topic or (f"{default}.rrjobs-delayed" if default else "")
