"""``DriverFactory``: what a driver author gives the conformance suite.

A driver's conformance module defines one pytest fixture, ``driver_factory``,
that returns a :class:`DriverFactory` subclass instance, and one test class
that inherits :class:`~rrjobs.testing.ConformanceSuite`::

    class MyFactory(DriverFactory):
        driver = "my_awesome_driver"
        constructor = Plugin

        def pipeline_options(self, name: str) -> dict[str, Any]:
            return {"queue": name}          # one broker queue per pipeline

    @pytest.fixture
    def driver_factory() -> MyFactory:
        return MyFactory()

    class TestMyDriver(ConformanceSuite):
        marker = "my_awesome_driver"

The suite builds every pipeline itself (from a :class:`~rrjobs.config.Config`
with ``driver_from_config``, or from a declared pipeline with
``driver_from_pipeline``) out of the options the factory returns, with a fresh
pipeline name per pipeline so that broker queues never collide between tests.
The hooks below say how to reach the broker from outside the driver. The
suite skips nothing: a test that needs a hook the factory does not provide
fails with the hook's :class:`HookUnsupported` reason. A driver with no wire
format at all (``wire = False``: its jobs live in the driver, as memory's do)
or with no RoadRunner counterpart on the same store (``roadrunner_layout =
False``) has the tests that publish from outside check the guarantee that
applies instead (see :attr:`DriverFactory.wire`).

The fixture should be synchronous: the suite runs each test in its own event
loop and calls :meth:`DriverFactory.open` and :meth:`DriverFactory.close`
inside it, so loop-bound clients belong there, not in the fixture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.message import Message
from rrjobs.registry import DriverRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from rrjobs.testing.pipe import Pipe

#: 1 MiB: the size of the "large payload" test unless the driver declares less.
MIB = 1024 * 1024


class HookUnsupported(Exception):
    """A factory hook the broker cannot provide.

    A test that needs the hook fails with this exception's message, so say
    *why*: ``HookUnsupported("NATS headers are text")``. From
    :meth:`DriverFactory.publish_raw_headers` it means "the broker cannot carry
    this value": the poison tests go on with the values it can carry.
    """


class DriverFactory:
    """Configured pipelines of one driver, for the conformance suite.

    Override the class attributes and hooks that apply to your broker. All
    hooks are called from the test's event loop. Timings are in seconds and
    are tolerances for a loaded machine: generous, never exact.
    """

    #: The driver name (the pipelines' ``driver:`` value).
    driver: str = ""
    #: The driver's :class:`~rrjobs.core.interfaces.Constructor` class (or any
    #: ``Callable[[Configurer], Constructor]``). ``None`` loads it from the
    #: ``rrjobs.drivers`` entry points, exactly as the runtime does.
    constructor: Callable[[Configurer], Constructor] | None = None
    #: A second driver built with the same options consumes the *same* broker
    #: queue (true for every networked broker and for file stores; false for
    #: ``memory``). The shared-queue, stop and at-least-once tests need it.
    shared_broker: bool = False
    #: A short broker ack deadline (visibility timeout, ack wait, lease) that
    #: :meth:`lease_options` can configure, or ``None``. The lease tests use it,
    #: and so do the redelivery tests so that a crashed consumer's job comes
    #: back quickly.
    ack_deadline: float | None = None
    #: How long to wait for a job that must be delivered.
    delivery_timeout: float = 10.0
    #: How long nothing must arrive to show that a job is *not* delivered.
    quiet_period: float = 0.5
    #: The delay the delay tests use (at least the broker's delay resolution).
    delay_unit: float = 1.0
    #: How late after its delay a delayed job may arrive.
    delay_tolerance: float = 3.0
    #: The unit in which the broker keeps delays (seconds): 1.0 for whole
    #: seconds, 0.001 for milliseconds, 0.0 when the driver times delays itself.
    #: A delay must be rounded *up* to it; a driver's own
    #: ``capabilities.delay_granularity``, when declared, takes precedence.
    delay_granularity: float = 0.0
    #: The broker has a wire format other clients write (a network protocol, a
    #: shared file): :meth:`publish_raw` and :meth:`publish_raw_headers` put
    #: messages on it. ``False`` only for a driver whose jobs live in the driver
    #: itself (``memory``): nothing but the driver can publish, so the foreign
    #: and poison tests push the same bodies and header values through the
    #: driver and check that they arrive as pushed (opaque, untouched, no stall).
    wire: bool = True
    #: RoadRunner writes this broker's messages with a layout the driver reads
    #: (:meth:`publish_roadrunner`). ``False`` when RoadRunner's driver of the
    #: same name keeps another format (boltdb's bbolt file) or there is no wire:
    #: RoadRunner's jobs then reach the driver only through a push (its RPC), so
    #: the RoadRunner-layout test pushes the same job and checks it is unchanged.
    roadrunner_layout: bool = True
    #: The largest message body the broker itself accepts, when it is known to be
    #: close to the driver's ``max_payload`` (the over-the-limit poison test needs
    #: a broker that takes one byte more than the driver sends).
    broker_max_body: int | None = None
    #: How long a broker may take to redeliver the unsettled jobs of a stopped
    #: or dead consumer (added to :attr:`ack_deadline` when that is set).
    redelivery_timeout: float = 10.0
    #: The time budget of one test.
    test_timeout: float = 90.0
    #: Workers and jobs for the concurrency test.
    concurrency_workers: int = 8
    concurrency_jobs: int = 200

    # -- per-test lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Called at the start of every test, in its event loop (create clients here)."""

    async def close(self) -> None:
        """Called at the end of every test, after every pipeline was stopped."""

    async def cleanup(self, names: Sequence[str]) -> None:
        """Delete the broker queues of the pipelines ``names`` (called before ``close``)."""

    # -- configuration -----------------------------------------------------------------

    def global_config(self) -> dict[str, Any]:
        """Top-level sections of the config file (e.g. ``{"amqp": {"addr": url}}``)."""
        return {}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        """The driver options (``jobs.pipelines.<name>.config``) of a new pipeline.

        ``name`` is unique per pipeline: derive broker queue names from it.
        """
        return {}

    def declare_options(self, name: str) -> dict[str, Any]:
        """The same options as ``Declare`` sends them: every value a string.

        The default turns :meth:`pipeline_options` into strings the way PHP
        clients do (booleans as ``true``/``false``, mappings and lists as JSON).
        """
        return {k: declare_value(v) for k, v in self.pipeline_options(name).items()}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        """Extra options that set the broker's ack deadline to ``seconds``."""
        raise HookUnsupported(f"the {self.driver} factory cannot configure an ack deadline")

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        """Extra options that let a consumer hold at most ``jobs`` unsettled jobs."""
        raise HookUnsupported(f"the {self.driver} factory cannot configure a prefetch window")

    # -- the broker from outside the driver --------------------------------------------

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish ``body`` to ``pipe``'s queue with the broker's own client,
        with ``headers`` as native headers/attributes and *no* ``rr_*`` metadata."""
        raise HookUnsupported(f"the {self.driver} factory cannot publish a raw message")

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Like :meth:`publish_raw`, with header values given as raw bytes: sent
        as the broker's binary type where it has one (AMQP byte arrays, Kafka
        header bytes, SQS ``Binary`` attributes), else as text. The poison tests
        use it for ``rr_headers``; a store without headers on the wire puts that
        value where it keeps a job's headers. Raise :class:`HookUnsupported`
        for a value the broker cannot carry (not text, over a size limit)."""
        raise HookUnsupported(f"the {self.driver} factory cannot publish raw header bytes")

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """Publish ``msg`` to ``pipe``'s queue laid out exactly as RoadRunner's
        driver for this broker writes it (its ``rr_*`` headers/attributes)."""
        raise HookUnsupported(
            f"the {self.driver} factory cannot publish a RoadRunner-layout message"
        )

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        """The payloads the broker dead-lettered for ``pipe`` so far."""
        raise HookUnsupported(f"the {self.driver} factory cannot read dead letters")

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        """Extra options that give the pipeline ``name`` the driver's own dead-letter
        store (a table, a topic, a subject, a queue), the one
        :meth:`dead_letter_messages` reads; create on the broker what the store
        needs first (an SQS dead-letter queue for a redrive policy). ``{}`` when
        :meth:`pipeline_options` already configures one."""
        raise HookUnsupported(f"the {self.driver} factory cannot configure a dead-letter store")

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The dead letters of the pipeline ``name`` so far, read with the broker's
        own client (or the store's): each one's id, job name, payload and headers
        as they are on the wire (``rr_attempts``, ``rr_error``, ``rr_failed_at``,
        ``rr_original_pipeline`` included). The first call may create what the
        broker needs to keep dead letters (a queue, a subscription): the suite
        makes it before the first job fails."""
        raise HookUnsupported(f"the {self.driver} factory cannot read dead letters back")

    async def kill_consumer(self, pipe: Pipe) -> None:
        """Make ``pipe``'s consumer die without settling what it received.

        The default stops the driver, which drops its connections; override it
        when a crash is something else for your broker (for example closing
        the connection abruptly).
        """
        await pipe.driver.stop()

    # -- used by the suite --------------------------------------------------------------

    def registry(self) -> DriverRegistry:
        """The drivers the suite's runtimes use."""
        if self.constructor is None:
            return DriverRegistry.from_entry_points()
        registry = DriverRegistry()
        registry.register(self.driver, self.constructor, source="rrjobs.testing")
        return registry


def declare_value(value: Any) -> str:
    """``value`` as a string, the way a ``Declare`` call carries it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value)
    return str(value)
