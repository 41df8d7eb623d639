"""``Outage``: the log lines and the restart rule of a broker that keeps failing.

Every driver has one :class:`Outage` for its broker (``BaseDriver.outage``): the
kit's fetch loop (:class:`~rrjobs.core.pull.PullDriver`), settlements that fail
in the background (``BaseDriver.settlement_lost``) and a driver's own loops and
connection callbacks (a reconnect loop, a client's "disconnected" callback)
record each failure with :meth:`Outage.down` (or :meth:`Outage.failed`, which
also sleeps the backoff) and the recovery with :meth:`Outage.ok`. Whichever call
fails first, an operator sees for one outage of one pipeline:

* one WARNING when it starts, with the error and what happens next::

    pipeline 'emails': fetching failed (ConnectionError: ...); retrying every 0.1-5 s,
    the pipeline is restarted after 60 s of failures

* DEBUG lines while it goes on (never a traceback: an outage is expected);
* one INFO when the broker works again, with how long it failed and how many
  calls failed meanwhile (fetches, retries, settlements)::

    pipeline 'emails': the broker works again after 3.2s (9 failed calls)

* once it has failed for longer than the limit, the reason to pass to
  :meth:`~rrjobs.core.base.BaseDriver.request_restart` (which logs that at ERROR).

A loop of its own that should report apart from the broker (the NATS delay
forwarder) has an :class:`Outage` of its own. Calls that fail apart but are one
outage (Kafka's fetch, commits and metadata probe) name their ``source``: the
outage ends when every source that failed works again.

:class:`Attempts` runs the calls of such a loop under one rule: a failure is
retried (reported to the outage) until :meth:`FailureWindow.give_up
<rrjobs.core.resilience.FailureWindow.give_up>` says to give up, then the owner
is asked whether the loop ends (a restart request).

Event-loop only; :meth:`Outage.failed` and :meth:`Attempts.attempt` are the only
coroutines (they sleep the backoff).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rrjobs.core.resilience import DEFAULT_RESTART_AFTER, Backoff, FailureWindow
from rrjobs.core.secrets import scrub

T = TypeVar("T")

#: The longest error text kept (a failed job's ``rr_error``, a log line's error).
MAX_REASON = 512
#: Seconds after a recovery in which failed settlements are the outage's aftermath
#: (receipt handles, delivery tags or ack ids from before it): logged at DEBUG.
AFTERMATH = 30.0


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, on one line, at most :data:`MAX_REASON` characters,
    credentials masked (:func:`~rrjobs.core.secrets.scrub`)."""
    text = scrub("".join(traceback.format_exception_only(exc)).strip().replace("\n", " "))
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


class Outage:
    """Failures of ``what`` (``"the broker"``, ``"forwarding delayed jobs"``) of ``owner``
    (``"pipeline 'emails'"``), logged to ``log``.

    ``retry`` overrides how the WARNING says what happens next (default: the backoff's
    ``retrying every 0.1-5 s`` and the restart after ``limit``), for a caller that
    retries by rules of its own (a client library that reconnects by itself)."""

    __slots__ = ("_ended", "_last", "backoff", "log", "owner", "retries", "retry", "sources",
                 "warned", "what", "window")

    def __init__(self, what: str, owner: str, log: logging.Logger,
                 limit: float = DEFAULT_RESTART_AFTER, backoff: Backoff | None = None,
                 *, retry: str | None = None) -> None:
        self.what = what
        self.owner = owner
        self.log = log
        self.window = FailureWindow(limit)
        self.backoff = backoff or Backoff()
        self.retry = retry
        #: failures since the outage began, after the first (0 while not failing)
        self.retries = 0
        #: the outage going on was logged at WARNING (its end is then logged at INFO)
        self.warned = False
        #: the sources failing now (see the module doc)
        self.sources: set[str] = set()
        self._ended: float | None = None
        self._last = 0.0  # when the latest failure was recorded (monotonic)

    @property
    def failing(self) -> bool:
        """An outage is going on (a failure, and no :meth:`ok` since)."""
        return self.window.failing

    def quiet(self) -> bool:
        """In an outage, or within :data:`AFTERMATH` seconds after one: a settlement that
        fails now is expected (the broker delivers its job again)."""
        if self.window.failing:
            return True
        return self._ended is not None and time.monotonic() - self._ended < AFTERMATH

    def policy(self) -> str:
        """What happens next, as the WARNING says it."""
        if self.retry is not None:
            return self.retry
        return (f"retrying {self.backoff.describe()}, the pipeline is restarted after "
                f"{self.window.limit:g} s of failures")

    def down(self, exc: BaseException, *, call: str | None = None, warn: bool = True,
             note: str = "", source: str | None = None) -> float:
        """Record a failure of ``call`` (default: :attr:`what`) of ``source``: the first
        one of an outage at WARNING (at DEBUG when ``warn`` is false: someone else said
        it), with ``note`` after the error; later ones at DEBUG. The seconds failing so far."""
        if source is not None:
            self.sources.add(source)
        first = not self.window.failing
        elapsed = self.window.failed()
        self._last = time.monotonic()
        failed = f"{call or self.what} failed ({describe_error(exc)}{note})"
        if first:
            self.retries, self.warned = 0, warn
            if warn:
                self.log.warning("%s: %s; %s", self.owner, failed, self.policy())
            else:
                self.log.debug("%s: %s", self.owner, failed)
        else:
            self.retries += 1
            self.log.debug("%s: still failing after %.1fs: %s", self.owner, elapsed, failed)
        return elapsed

    def reason(self, exc: BaseException, call: str | None = None) -> str | None:
        """The restart reason once failing for longer than the limit, else ``None``."""
        if not self.window.expired:
            return None
        return (f"{call or self.what} has failed for {self.window.elapsed():.0f}s "
                f"({describe_error(exc)})")

    async def failed(self, exc: BaseException, *, call: str | None = None,
                     warn: bool = True) -> str | None:
        """:meth:`down`, then sleep the backoff; once failing for longer than the limit,
        return the restart reason at once instead of ``None``."""
        self.down(exc, call=call, warn=warn)
        reason = self.reason(exc, call)
        if reason is not None:
            return reason
        await self.backoff.sleep()
        return None

    def ok(self, started: float | None = None, *, source: str | None = None) -> None:
        """A success (of ``source``: the outage ends once no source fails): log the end of
        an outage (at INFO, or at DEBUG when its start was not warned of); the window and
        the backoff start again. A call that ``started`` (``time.monotonic()``) before the
        latest failure proves nothing (a broker that is going away still answers what it
        had): the outage goes on."""
        if started is not None and started < self._last:
            return
        if source is not None:
            if source not in self.sources:
                return
            self.sources.discard(source)
            if self.sources:
                return
        if self.window.failing:
            calls = self.retries + 1
            self.log.log(logging.INFO if self.warned else logging.DEBUG,
                         "%s: %s works again after %.1fs (%d failed %s)", self.owner,
                         self.what, self.window.elapsed(), calls,
                         "call" if calls == 1 else "calls")
            self.window.ok()
            self.backoff.reset()
            self.retries = 0
            self.sources.clear()
            self._ended = time.monotonic()


class Attempts:
    """The calls of one retrying loop of ``outage``'s owner, failing as ``source``.

    A failure is retried after ``wait`` seconds, and reported to the outage, until it is
    ``fatal(error)`` or the calls have failed for ``limit`` seconds without a success
    (:meth:`FailureWindow.until <rrjobs.core.resilience.FailureWindow.until>`: ``0``
    never); then ``on_fatal(why, error)`` says whether the loop ends (a restart was
    asked for) or goes on, counting again. The first success after failures ends
    ``source``'s part of the outage. With ``aftermath``, a failure within
    :data:`AFTERMATH` seconds after an outage is its consequence (a commit refused
    because the group rebalanced meanwhile): logged at DEBUG, no new outage."""

    __slots__ = ("aftermath", "fatal", "on_fatal", "outage", "source", "wait", "window")

    def __init__(self, outage: Outage, source: str, limit: float,
                 on_fatal: Callable[[str, BaseException], bool],
                 fatal: Callable[[BaseException], bool], wait: float, *,
                 aftermath: bool = False) -> None:
        self.outage = outage
        self.source = source
        self.window = FailureWindow.until(limit)
        self.on_fatal = on_fatal
        self.fatal = fatal
        self.wait = wait
        self.aftermath = aftermath

    async def attempt(self, work: Awaitable[T], what: str, failed: T, call: str) -> T | None:
        """``work``'s result (``what``: the call, as the restart reason names it; ``call``:
        as the outage's log lines do); ``failed`` after a failure that is retried, ``None``
        once the loop ends."""
        try:
            result = await work
        except Exception as exc:
            reason, outage = self.window.give_up(what, self.fatal(exc)), self.outage
            if reason is None and self.aftermath and outage.quiet() and not outage.failing:
                outage.log.debug("%s: %s failed after the outage: %s", outage.owner, call,
                                 describe_error(exc))
            elif reason is None:
                outage.down(exc, call=call, source=self.source)
            elif self.on_fatal(reason, exc):
                return None
            await asyncio.sleep(self.wait)
            return failed
        if self.window.failing:
            self.window.ok()
            self.outage.ok(source=self.source)
        return result
