"""``Outage``: the log lines and the restart rule of a broker call that keeps failing.

A driver loop that calls its broker again and again besides the kit's fetch loop
(a delay forwarder, a commit loop) records each failure with :meth:`Outage.failed`
and each success with :meth:`Outage.ok`, and so reports an outage the way
:class:`~rrjobs.core.pull.PullDriver` reports failing fetches: one WARNING when
the call starts failing, DEBUG while it goes on, one INFO when it works again,
and, once it has failed for longer than the limit, the reason to pass to
:meth:`~rrjobs.core.base.BaseDriver.request_restart`.

Event-loop only; :meth:`Outage.failed` is the only coroutine (it sleeps the backoff).
"""

from __future__ import annotations

import logging

from rrjobs.core.base import describe_error
from rrjobs.core.resilience import DEFAULT_RESTART_AFTER, Backoff, FailureWindow


class Outage:
    """Failures of the call ``what`` (``"forwarding delayed jobs"``) of ``owner``
    (``"pipeline 'emails'"``), logged to ``log``."""

    __slots__ = ("backoff", "log", "owner", "what", "window")

    def __init__(self, what: str, owner: str, log: logging.Logger,
                 limit: float = DEFAULT_RESTART_AFTER, backoff: Backoff | None = None) -> None:
        self.what = what
        self.owner = owner
        self.log = log
        self.window = FailureWindow(limit)
        self.backoff = backoff or Backoff()

    async def failed(self, exc: BaseException, *, warn: bool = True) -> str | None:
        """Log ``exc`` (the first failure at WARNING unless ``warn`` is false, later ones at
        DEBUG) and sleep the backoff; once failing for longer than the limit, return the
        restart reason at once instead of ``None``."""
        first = not self.window.failing
        elapsed = self.window.failed()
        if first and warn:
            self.log.warning("%s: %s failed (%s); retrying with backoff", self.owner, self.what,
                             describe_error(exc))
        elif not first:
            self.log.debug("%s: %s still fails after %.1fs: %s", self.owner, self.what, elapsed,
                           describe_error(exc))
        if self.window.expired:
            return f"{self.what} has failed for {elapsed:.0f}s ({describe_error(exc)})"
        await self.backoff.sleep()
        return None

    def ok(self) -> None:
        """A success: log the end of an outage; the window and the backoff start again."""
        if self.window.failing:
            self.log.info("%s: %s again after %.1fs", self.owner, self.what,
                          self.window.elapsed())
            self.window.ok()
            self.backoff.reset()
