"""The soak's measuring tools: a resident-set-size sampler and a latency histogram.

:class:`RssSampler` is a daemon thread that reads a process's RSS from
``/proc/<pid>/statm`` every ``interval`` seconds, together with a progress
counter (jobs handled so far), so that "the RSS at 25% of the run" is the RSS
when a quarter of the jobs had been handled, whatever the start-up took.
Nothing here asserts on time: the samples are data, judged by :func:`plateau`.

:class:`LatencyHistogram` holds push-to-handle latencies in a fixed array of
logarithmic buckets (32 per power of two: a value is known within 2.2%), so
recording a million latencies allocates nothing and keeps no list alive.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes per page, for ``/proc/<pid>/statm`` (counted in pages).
PAGE = os.sysconf("SC_PAGE_SIZE")
#: The plateau check: the final RSS within this fraction of the RSS at 25%.
PLATEAU_TOLERANCE = 0.10
#: Where in the run the reference sample is taken (fraction of the jobs handled).
REFERENCE_AT = 0.25


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of process ``pid`` (this one by default), in bytes."""
    with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: seconds since the sampler started, RSS in bytes, progress."""

    t: float
    rss: int
    done: int

    @property
    def rss_mb(self) -> float:
        return self.rss / 1e6


class RssSampler:
    """Samples the RSS of ``pid`` (``None``: this process) and ``progress()``
    every ``interval`` seconds in a daemon thread, from :meth:`start` to
    :meth:`stop`. :meth:`sample` takes one more reading at once (the final one)."""

    def __init__(self, progress: Callable[[], int], *, pid: int | None = None,
                 interval: float = 1.0) -> None:
        self.progress = progress
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> RssSampler:
        self._t0 = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> Sample:
        """Take one reading now and keep it."""
        s = Sample(time.monotonic() - self._t0, rss_bytes(self.pid), self.progress())
        with self._lock:
            self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except OSError:  # the process is gone
                return

    def stop(self) -> list[Sample]:
        """Stop sampling (after one last reading) and return every sample."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(OSError):  # the sampled process may be gone
            self.sample()
        with self._lock:
            return list(self.samples)


@dataclass(frozen=True, slots=True)
class Plateau:
    """The plateau check of one run: the RSS when ``REFERENCE_AT`` of the jobs
    were handled, the final RSS, and whether the final one is within
    ``tolerance`` of the reference."""

    reference_mb: float
    final_mb: float
    tolerance: float

    @property
    def growth(self) -> float:
        """Final over reference, minus one (0.03: 3% more at the end)."""
        return self.final_mb / self.reference_mb - 1 if self.reference_mb else math.inf

    @property
    def ok(self) -> bool:
        return abs(self.growth) <= self.tolerance


def plateau(samples: list[Sample], total: int, *,
            tolerance: float = PLATEAU_TOLERANCE) -> Plateau:
    """Judge ``samples`` of a run of ``total`` jobs: the reference is the first
    sample taken with at least ``REFERENCE_AT * total`` jobs done, the final one
    the last sample. ``ValueError`` if no sample reached the reference point."""
    if not samples:
        raise ValueError("no RSS sample")
    mark = REFERENCE_AT * total
    ref = next((s for s in samples if s.done >= mark), None)
    if ref is None:
        raise ValueError(f"no RSS sample after {mark:.0f} of {total} jobs")
    return Plateau(ref.rss_mb, samples[-1].rss_mb, tolerance)


class LatencyHistogram:
    """Latencies in nanoseconds, in logarithmic buckets of 2^(1/32) (2.2% wide)."""

    #: Buckets per power of two.
    STEPS = 32
    #: Powers of two covered: up to 2^44 ns (about 4.9 hours).
    OCTAVES = 44

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self.STEPS * self.OCTAVES))
        self.total = 0
        self.max_ns = 0
        self._last = len(self.counts) - 1
        self._scale = self.STEPS / math.log(2)

    def record(self, ns: int) -> None:
        """Count one latency (a negative one, from clock skew, counts as 0)."""
        if ns > self.max_ns:
            self.max_ns = ns
        i = int(math.log(ns) * self._scale) if ns > 1 else 0
        self.counts[i if i < self._last else self._last] += 1
        self.total += 1

    def _upper_ns(self, i: int) -> float:
        return math.exp((i + 1) / self._scale)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in milliseconds: the upper edge of
        the bucket holding it (never more than the largest value recorded)."""
        if self.total == 0:
            raise ValueError("no latency recorded")
        rank = max(1, math.ceil(self.total * p / 100))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self._upper_ns(i), float(self.max_ns)) / 1e6
        return self.max_ns / 1e6  # pragma: no cover (rank <= total)
