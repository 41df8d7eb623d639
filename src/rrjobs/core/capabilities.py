"""What a driver can do, declared up front.

kombu writes a capability matrix at the head of each transport; rrjobs makes it
a value the runtime and the conformance suite can ask. A driver that cannot do
something declares it here *and* raises
:class:`~rrjobs.core.errors.UnsupportedFeatureError` when asked for it; it never
ignores an option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from rrjobs.core.errors import PayloadTooLargeError, UnsupportedFeatureError


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A driver's declared abilities.

    Attributes:
        delay: delayed delivery is supported (``Message.delay`` and the delay
            of ``nack``/``requeue``).
        max_delay: the largest delay in seconds, or ``None`` for no limit.
        delay_native: delays are kept by the broker or a durable store (never
            held unacked in process memory).
        priority: the driver orders jobs by priority (lower number first).
        durable: accepted jobs survive a restart of the process (and broker).
        max_payload: the largest payload in bytes, or ``None`` for no limit.
        lease_extension: ``Job.extend_lease`` works (a long handler keeps its
            job without redelivery).
        dead_letter: ``nack(requeue=False)`` can dead-letter natively, with the
            job's headers (the dead-letter headers included).
        dead_letter_read: the driver's dead letters can be read back, replayed
            and purged: ``Driver.dead_letter_store()`` returns its
            :class:`~rrjobs.core.deadletters.DeadLetterStore` (``rrjobs dlq``).
        redelivery_on_crash: a job received but never settled is redelivered
            when the consumer dies (at-least-once across process crashes).
        pause: ``pause``/``resume`` are supported.
        headers: arbitrary job headers round-trip, several values per key.
        delay_granularity: the broker's delay resolution in seconds (1.0 for
            whole seconds, 0.001 for milliseconds, 0 for finer). Delays are
            rounded up to it (:mod:`rrjobs.core.delays`): never delivered early.
        shared_queue: the pipeline's jobs are kept outside the process (a
            broker, a shared file): every driver built with the same options,
            in this process or another, consumes the same jobs, each job going
            to one of them. ``rrjobs serve --processes N`` (N > 1) refuses a
            pipeline whose driver does not declare it (each process would have
            a queue of its own, or get every job).
        reserved_per_consumer: ``State.reserved`` counts only the jobs this
            driver instance holds (the broker keeps no count of every
            consumer's), so the processes of ``rrjobs serve --processes N`` add
            theirs up; false: it is the broker's or the file's count of every
            consumer's reserved jobs, the same in each process, shown once.

    ``shared_queue`` and ``reserved_per_consumer`` are known before a pipeline
    opens (``Constructor.declared_capabilities``, from the driver class's
    ``declared(options)``), and a built driver carries the same two values.
    """

    delay: bool = True
    max_delay: float | None = None
    delay_native: bool = True
    priority: bool = True
    durable: bool = False
    max_payload: int | None = None
    lease_extension: bool = False
    dead_letter: bool = False
    dead_letter_read: bool = False
    redelivery_on_crash: bool = False
    pause: bool = True
    headers: bool = True
    delay_granularity: float = 0.0
    shared_queue: bool = False
    reserved_per_consumer: bool = False

    def check_delay(self, delay: float, driver: str) -> None:
        """Raise :class:`UnsupportedFeatureError` if ``delay`` cannot be honoured."""
        if delay <= 0:
            return
        if not self.delay:
            raise UnsupportedFeatureError(f"driver {driver!r} does not support delayed jobs")
        if self.max_delay is not None and delay > self.max_delay:
            raise UnsupportedFeatureError(
                f"driver {driver!r} supports delays up to {self.max_delay:g}s, got {delay:g}s"
            )

    def check_payload(self, size: int, driver: str) -> None:
        """Raise :class:`PayloadTooLargeError` if ``size`` exceeds ``max_payload``."""
        if self.max_payload is not None and size > self.max_payload:
            raise PayloadTooLargeError(
                f"payload of {size} bytes exceeds driver {driver!r} maximum of "
                f"{self.max_payload} bytes"
            )

    def check_headers(self, headers: Mapping[str, Sequence[str]], driver: str) -> None:
        """Raise :class:`UnsupportedFeatureError` if ``headers`` cannot be carried."""
        if headers and not self.headers:
            raise UnsupportedFeatureError(f"driver {driver!r} cannot carry job headers")

    def as_dict(self) -> dict[str, object]:
        """The capabilities as a plain dict (for docs, ``stat --json`` and tests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
