"""Options of the ``amqp`` driver, with RoadRunner's key names and defaults.

The global ``amqp:`` section (:class:`AMQPSection`) and each pipeline's
options (:class:`AMQPOptions`: RoadRunner's flat version 1 form, its nested
version 2 form, or the string map ``Declare`` sends) resolve to one
:class:`Topology`, which is what the driver uses. No network, no AMQP client.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    model_validator,
)

from rrjobs.core.delays import whole_millis
from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, json_map, or_default
from rrjobs.core.secret_types import SecretURL, URLSecret, url_scheme
from rrjobs.core.tls import TLSConfig, optional_tls

DEFAULT_ADDR = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_EXCHANGE = "amqp.default"
DEFAULT_PREFETCH = 10
DEFAULT_PRIORITY = 10
DEFAULT_REDIAL_TIMEOUT = 60.0

ExchangeType = Literal["direct", "fanout", "topic", "headers"]

#: Exchange types that route without a routing key.
KEYLESS_EXCHANGES = frozenset({"fanout", "headers"})


class AMQPSection(StrictModel):
    """The global ``amqp:`` section: ``addr`` (an ``amqp://`` or ``amqps://``
    URI; aiormq's query options pass through; shown with its password masked) and
    ``tls`` (needs ``amqps://``)."""

    addr: Annotated[SecretURL, or_default(DEFAULT_ADDR)] = URLSecret(DEFAULT_ADDR)
    tls: Annotated[TLSConfig | None, optional_tls("amqp.tls")] = None

    @model_validator(mode="after")
    def _check(self) -> AMQPSection:
        scheme = url_scheme(self.addr.get_secret_value(), ("amqp", "amqps"),
                            "an amqp:// or amqps:// URI")
        if self.tls is not None and scheme != "amqps":
            raise ValueError("tls is configured but addr uses amqp://; use amqps:// so that "
                             "the connection is encrypted")
        return self


def _check_arguments(value: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise ValueError(f"{key}: queue arguments must be strings, numbers or booleans, "
                             f"got {type(item).__name__}")
    return value


#: Queue arguments: a mapping (or its JSON, as ``Declare`` sends it) of scalars.
QueueArguments = Annotated[dict[str, Any], BeforeValidator(json_map),
                           AfterValidator(_check_arguments)]


class ExchangeOptions(StrictModel):
    """Version 2 ``exchange:`` options."""

    name: Annotated[str, or_default(DEFAULT_EXCHANGE)] = DEFAULT_EXCHANGE
    type: ExchangeType = "direct"
    durable: bool = False
    auto_delete: bool = False
    declare: bool = True


class QueueOptions(StrictModel):
    """Version 2 ``queue:`` options, and the queue a pipeline consumes whichever form
    was given (``name`` is empty for a push-only pipeline)."""

    name: str = ""
    routing_key: str = ""
    durable: bool = False
    auto_delete: bool = False
    exclusive: bool = False
    delete_on_stop: bool = False
    multiple_ack: bool = False
    requeue_on_fail: bool = False
    consumer_id: str = ""
    headers: QueueArguments = Field(default_factory=dict)
    declare: bool = True

    @property
    def arguments(self) -> dict[str, Any]:
        """The queue's arguments (``headers``: RoadRunner's name for them)."""
        return self.headers


def _name_or(model: type[ExchangeOptions] | type[QueueOptions]) -> Any:
    """A name (version 1) or the nested options (version 2), with errors under the key."""

    def parse(value: Any) -> Any:
        if isinstance(value, model | str):
            return value
        if isinstance(value, dict):
            return model.model_validate(value)
        raise ValueError(f"expected a name or a mapping, got {type(value).__name__}")

    return PlainValidator(parse)


QueueField = Annotated[str | QueueOptions, _name_or(QueueOptions)]
ExchangeField = Annotated[str | ExchangeOptions, _name_or(ExchangeOptions)]

#: Flat (version 1) keys that the version 2 form nests, with their new place.
_V1_EXCHANGE_KEYS = {f"exchange_{key}": f"exchange.{key}"
                     for key in ("type", "durable", "auto_delete", "declare")}
_V1_QUEUE_KEYS = {
    "routing_key": "queue.routing_key", "durable": "queue.durable",
    "queue_auto_delete": "queue.auto_delete", "exclusive": "queue.exclusive",
    "delete_queue_on_stop": "queue.delete_on_stop", "multiple_ack": "queue.multiple_ack",
    "requeue_on_fail": "queue.requeue_on_fail", "consumer_id": "queue.consumer_id",
    "queue_headers": "queue.headers", "queue_declare": "queue.declare",
}


class AMQPOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: amqp`` (and the ``Declare``
    keys): the flat version 1 keys, or ``exchange`` and ``queue`` as mappings
    (version 2). An empty string means the default, as in RoadRunner."""

    version: Literal[0, 1, 2] = 0
    priority: int = DEFAULT_PRIORITY
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1, le=65535)
    redial_timeout: Duration = DEFAULT_REDIAL_TIMEOUT

    queue: QueueField = ""
    exchange: ExchangeField = DEFAULT_EXCHANGE

    # version 1 (flat) keys
    exchange_type: ExchangeType = "direct"
    routing_key: str = ""
    exclusive: bool = False
    durable: bool = False
    exchange_durable: bool = False
    exchange_auto_delete: bool = False
    queue_auto_delete: bool = False
    delete_queue_on_stop: bool = False
    multiple_ack: bool = False
    requeue_on_fail: bool = False
    queue_headers: QueueArguments = Field(default_factory=dict)
    consumer_id: str = ""
    exchange_declare: bool = True
    queue_declare: bool = True
    #: rrjobs: the queue the dead-letter exchange routes this pipeline's dead
    #: letters to, which ``rrjobs dlq`` reads (empty: they cannot be read back)
    dead_letter_queue: str = ""

    @model_validator(mode="after")
    def _check_form(self) -> AMQPOptions:
        nested_exchange = isinstance(self.exchange, ExchangeOptions)
        nested_queue = isinstance(self.queue, QueueOptions)
        given = self.model_fields_set
        if self.version == 2 and not (nested_exchange or nested_queue) and (
                "exchange" in given or "queue" in given):
            raise ValueError("version 2 nests the options: exchange: {name: ..., type: ...} "
                             "and queue: {name: ..., routing_key: ...}")
        if self.version in (0, 1) and "version" in given and (nested_exchange or nested_queue):
            raise ValueError(f"version {self.version} is the flat form; nested exchange:/queue: "
                             "mappings need version: 2")
        for is_nested, nested, keys in ((nested_exchange, "exchange", _V1_EXCHANGE_KEYS),
                                        (nested_queue, "queue", _V1_QUEUE_KEYS)):
            for key, where in keys.items():
                if is_nested and key in given:
                    raise ValueError(f"{key} is a version 1 key; with the nested {nested}: "
                                     f"form write it as {where}")
        return self

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for settings that are well-formed but unusable together
        (:func:`~rrjobs.core.constructor.check_problems`); keys are written as the user
        wrote them (flat, or nested as ``queue.<key>``)."""
        topo = self.topology()
        nested = isinstance(self.queue, QueueOptions)

        def key(flat: str) -> str:
            return _V1_QUEUE_KEYS.get(flat, flat) if nested else flat

        out: list[tuple[str, str]] = []
        if topo.exchange.type not in KEYLESS_EXCHANGES and not topo.queue.routing_key:
            out.append((key("routing_key"),
                        f"required for a {topo.exchange.type} exchange (only fanout and "
                        "headers exchanges route without one)"))
        if topo.queue.requeue_on_fail:
            out.append((key("requeue_on_fail"),
                        "true is not supported: it redelivers a failing job forever. Failed "
                        "jobs are retried by the pipeline's retry policy (retry.max_attempts, "
                        "retry.backoff) and then nacked, which dead-letters them through the "
                        "queue's x-dead-letter-exchange"))
        max_priority = topo.max_priority
        if max_priority is not None and not 1 <= max_priority <= 255:
            out.append((key("queue_headers"), "x-max-priority must be an integer from 1 to 255"))
        return out

    def topology(self) -> Topology:
        """The resolved settings the driver uses, whichever form was given."""
        exchange = self.exchange if isinstance(self.exchange, ExchangeOptions) else (
            ExchangeOptions(name=self.exchange, type=self.exchange_type,
                            durable=self.exchange_durable,
                            auto_delete=self.exchange_auto_delete,
                            declare=self.exchange_declare))
        queue = self.queue if isinstance(self.queue, QueueOptions) else QueueOptions(
            name=self.queue, routing_key=self.routing_key, durable=self.durable,
            auto_delete=self.queue_auto_delete, exclusive=self.exclusive,
            delete_on_stop=self.delete_queue_on_stop, multiple_ack=self.multiple_ack,
            requeue_on_fail=self.requeue_on_fail, consumer_id=self.consumer_id,
            headers=self.queue_headers, declare=self.queue_declare)
        return Topology(exchange=exchange, queue=queue, prefetch=self.prefetch,
                        priority=self.priority,
                        redial_timeout=self.redial_timeout or DEFAULT_REDIAL_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Topology:
    """Everything a driver needs to know about its exchange, queue and consumer."""

    exchange: ExchangeOptions
    queue: QueueOptions
    prefetch: int
    priority: int
    redial_timeout: float
    consumer_tag: str = field(default="")

    def __post_init__(self) -> None:
        if not self.consumer_tag:
            tag = self.queue.consumer_id or f"roadrunner-{uuid.uuid4()}"
            object.__setattr__(self, "consumer_tag", tag)

    def _argument(self, key: str) -> str | None:
        """The queue's ``key`` argument as text, when it has one."""
        value = self.queue.arguments.get(key)
        return None if value is None else str(value)

    @property
    def max_priority(self) -> int | None:
        """The queue's ``x-max-priority`` argument, when it has one (-1: not an integer)."""
        value = self.queue.arguments.get("x-max-priority")
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            return -1

    @property
    def dead_letter_exchange(self) -> str | None:
        return self._argument("x-dead-letter-exchange")

    @property
    def dead_letter_routing_key(self) -> str | None:
        return self._argument("x-dead-letter-routing-key")

    @property
    def quorum(self) -> bool:
        return str(self.queue.arguments.get("x-queue-type", "")) == "quorum"

    @property
    def durable(self) -> bool:
        """Jobs survive a broker restart (a durable or quorum queue; messages are
        always published persistent)."""
        return self.queue.durable or self.quorum

    def delay_queue(self, delay_ms: int, routing_key: str) -> str:
        """RoadRunner's delay queue name for a push: ``delayed-<ms>.<exchange>.<queue|rk>``."""
        target = self.queue.name if routing_key == self.queue.routing_key else routing_key
        return f"delayed-{delay_ms}.{self.exchange.name}.{target or routing_key}"


def delay_ms(delay: float) -> int:
    """A delay in seconds as whole milliseconds, rounded up (never early)."""
    return max(1, whole_millis(delay))
