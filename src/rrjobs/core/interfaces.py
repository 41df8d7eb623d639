"""The driver contract: ``Constructor`` and ``Driver``, as in RoadRunner's api-plugins.

A driver is a plugin found through the ``rrjobs.drivers`` entry-point group.
The entry point names a :class:`Constructor` subclass; the runtime creates it
once with the :class:`Configurer` and asks it for one :class:`Driver` per
pipeline. One driver instance serves exactly one pipeline.

Blocking: every coroutine here may wait on network or disk I/O, but none may
block the event loop (a blocking client must run in a thread).

Concurrency: the runtime calls ``push`` concurrently from many tasks, and
``state`` at any time. ``run``, ``pause``, ``resume`` and ``stop`` are never
called concurrently with each other for the same driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.deadletters import DeadLetterStore
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State

M = TypeVar("M", bound=BaseModel)


@runtime_checkable
class Configurer(Protocol):
    """Read access to the loaded configuration (RoadRunner's ``Configurer``).

    Keys are dotted paths from the top of the file, e.g. ``"amqp"`` or
    ``"jobs.pipelines.test-1.config"``. ``unmarshal_key`` validates with a
    pydantic model and raises :class:`~rrjobs.core.errors.ConfigError` naming
    the full key path of the first bad value (and all others in ``problems``).
    """

    def has(self, key: str) -> bool: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def unmarshal_key(self, key: str, model: type[M]) -> M: ...


class Driver(ABC):
    """One pipeline's connection to a broker.

    Guarantees every driver gives:

    * ``push`` returns only once the broker has accepted the job (publisher
      confirm, fsync, ...): a pushed job is not lost.
    * Received jobs are inserted into the shared :class:`PriorityQueue`; a
      job's ``ack``/``nack``/``requeue`` map to the broker's native operations.
    * ``stop`` stops consuming, removes the pipeline's jobs from the priority
      queue (unsettled jobs return to the broker) and closes connections.
    """

    #: The driver's name, equal to the pipeline's ``driver:`` value.
    name: ClassVar[str] = ""
    #: What this driver can do. May be narrowed per instance (e.g. by config).
    capabilities: Capabilities = Capabilities()
    #: Set by the runtime when it registers the driver. A driver that cannot
    #: recover by itself calls ``command_handler(pipeline, "restart")`` and the
    #: runtime stops it and builds the pipeline again (RoadRunner's driver →
    #: plugin ``restart`` command). Called on the event loop; returns at once.
    command_handler: Callable[[str, str], None] | None = None
    #: True between ``run``/``resume`` and ``pause``/``stop``: the runtime reads
    #: it to rebuild a pipeline in the same state after a restart.
    consuming: bool = False

    @abstractmethod
    async def push(self, msg: Message) -> None:
        """Send one job to the broker. Waits for the broker's acceptance.

        Raises :class:`~rrjobs.core.errors.UnsupportedFeatureError` or
        :class:`~rrjobs.core.errors.PayloadTooLargeError` for what the driver
        cannot honour. Safe to call concurrently.
        """

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        """Send several jobs. Drivers override this to batch round trips.

        All-or-error: on an error some of the jobs may have been accepted (as
        RoadRunner's ``PushBatch``), the exception says which failed.
        """
        for msg in msgs:
            await self.push(msg)

    async def serve(self) -> None:
        """Start what runs while the pipeline is declared in a server, consuming or not
        (a delay forwarder); the runtime calls it for every pipeline it builds. Idempotent."""
        return None

    @abstractmethod
    async def run(self, pipeline: Pipeline) -> None:
        """Start consuming into the priority queue. Returns once started."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop consuming and close. Idempotent."""

    @abstractmethod
    async def pause(self, pipeline: str) -> None:
        """Stop consuming; pushes still work.

        Raises :class:`~rrjobs.core.errors.PipelineStateError` when not consuming.
        """

    @abstractmethod
    async def resume(self, pipeline: str) -> None:
        """Resume (or start, if never run) consuming.

        Raises :class:`~rrjobs.core.errors.PipelineStateError` when consuming.
        """

    @abstractmethod
    async def state(self) -> State:
        """The pipeline's counts and readiness. Safe to call at any time."""

    def dead_letter_store(self) -> DeadLetterStore | None:
        """The pipeline's dead letters, read back (``rrjobs dlq``): a driver that
        declares ``capabilities.dead_letter_read`` returns its
        :class:`~rrjobs.core.deadletters.DeadLetterStore` (itself, or a reader
        object); ``None`` (the default) when it cannot."""
        return None


class Constructor(ABC):
    """Builds drivers of one kind (RoadRunner's ``jobs.Constructor``).

    Created once per runtime with the configuration. ``driver_from_config`` and
    ``driver_from_pipeline`` build a driver and validate its options, but do not
    start consuming (the runtime calls ``run`` or ``resume`` for that).
    """

    #: The driver name; pipelines select this constructor with ``driver: <name>``.
    name: ClassVar[str] = ""
    #: Options naming a file the driver opens or creates: a pipeline declared
    #: through the RPC may only name paths under ``rpc.declare_dir`` there.
    file_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, configurer: Configurer) -> None:
        self.configurer = configurer

    @abstractmethod
    async def driver_from_config(
        self, config_key: str, queue: PriorityQueue, pipeline: Pipeline
    ) -> Driver:
        """A driver for a pipeline declared in the config file.

        ``config_key`` is ``"jobs.pipelines.<name>.config"``: read the options
        with ``self.configurer.unmarshal_key(config_key, Model)`` so errors name
        the full key path.
        """

    @abstractmethod
    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue) -> Driver:
        """A driver for a pipeline declared at run time; every option is in ``pipeline``."""

    def declared_capabilities(self, source: str | Pipeline) -> Capabilities:
        """What a pipeline's driver will declare, known before it opens (options
        validated, nothing connected): ``source`` is a config pipeline's options key
        (``jobs.pipelines.<name>.config``) or a pipeline declared at run time.
        ``rrjobs serve --processes N`` reads ``shared_queue`` and
        ``reserved_per_consumer`` here. A constructor that does not say declares
        nothing (its pipelines are refused with more than one process)."""
        return Capabilities()
