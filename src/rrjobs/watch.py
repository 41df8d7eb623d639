"""Live views of ``stat``: push and handle rates from successive stats, and
``rrjobs stat --watch``.

:class:`Rates` turns two successive ``stat`` answers into per-second rates
per pipeline (the dashboard uses it too). :func:`watch_table` draws one frame
of ``rrjobs stat --watch``; :func:`watch` polls a server and redraws it with
``rich.live`` (or prints one JSON line per poll).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rrjobs.runtime.stats import PipelineStat


@dataclass(frozen=True, slots=True)
class Rate:
    """Jobs per second of one pipeline between two stats; ``None`` before a
    second stat (or after its counters went back, e.g. a recreated pipeline)."""

    push: float | None = None
    handle: float | None = None


def handled(stat: PipelineStat) -> int:
    """Handler executions so far: those that returned and those that raised."""
    return stat.counters.ok + stat.counters.failed


class Rates:
    """Per-pipeline rates from successive stats. ``update`` with each new
    ``stat`` answer and the time it was taken (``time.monotonic()``)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, Rate] = {}

    def update(self, stats: Sequence[PipelineStat], now: float) -> dict[str, Rate]:
        """Record ``stats`` taken at ``now``; return every pipeline's rate."""
        rates: dict[str, Rate] = {}
        seen: dict[str, tuple[float, int, int]] = {}
        for s in stats:
            name = s.state.pipeline
            current = (now, s.counters.pushed, handled(s))
            last = self._last.get(name)
            if last is None or current[1] < last[1] or current[2] < last[2]:
                rates[name] = Rate()  # first seen, or its counters started again
            elif now <= last[0]:
                rates[name] = self._rates.get(name, Rate())  # no time passed: keep
                current = last
            else:
                dt = now - last[0]
                rates[name] = Rate((current[1] - last[1]) / dt, (current[2] - last[2]) / dt)
            seen[name] = current
        self._last = seen
        self._rates = rates
        return rates

    def get(self, pipeline: str) -> Rate:
        """The rate last computed for ``pipeline``."""
        return self._rates.get(pipeline, Rate())


def state_word(stat: PipelineStat) -> str:
    """``error``, ``consuming`` or ``paused``."""
    if stat.state.error_message:
        return "error"
    return "consuming" if stat.state.ready else "paused"


def format_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


#: The columns of ``stat --watch``: header, justification.
WATCH_COLUMNS = (("pipeline", "left"), ("driver", "left"), ("state", "left"),
                 ("queued", "right"), ("delayed", "right"), ("in flight", "right"),
                 ("ok", "right"), ("failed", "right"), ("dead-lettered", "right"),
                 ("push/s", "right"), ("handled/s", "right"))


def watch_table(stats: Sequence[PipelineStat], rates: Rates, *, address: str = "",
                interval: float = 1.0, error: str = "") -> Group:
    """One frame of ``rrjobs stat --watch``."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for header, justify in WATCH_COLUMNS:
        table.add_column(header, justify=justify,  # type: ignore[arg-type]
                         no_wrap=header == "pipeline")
    styles = {"consuming": "[green]consuming[/]", "paused": "[yellow]paused[/]",
              "error": "[red]error[/]"}
    for s in stats:
        st, c = s.state, s.counters
        rate = rates.get(st.pipeline)
        table.add_row(
            f"[cyan]{st.pipeline}[/]", st.driver, styles[state_word(s)], str(st.active),
            str(st.delayed), str(st.reserved), str(c.ok),
            f"[red]{c.failed}[/]" if c.failed else "0",
            f"[red]{c.dead_lettered}[/]" if c.dead_lettered else "0",
            format_rate(rate.push), format_rate(rate.handle),
        )
    stamp = time.strftime("%H:%M:%S")
    title = Text.assemble(("rrjobs stat --watch", "bold"), f"  {address}  ",
                          (f"every {interval:g}s", "dim"), f"  {stamp}  ",
                          ("Ctrl-C to quit", "dim"))
    parts: list[Any] = [title, table if stats else Text("no pipelines")]
    if error:
        parts.append(Text(error, style="red"))
    errors = [f"{s.state.pipeline}: {s.state.error_message}" for s in stats
              if s.state.error_message]
    parts.extend(Text(e, style="red") for e in errors)
    return Group(*parts)


def watch_record(stats: Sequence[PipelineStat], rates: Rates) -> dict[str, Any]:
    """One JSON line of ``rrjobs stat --watch --json``: the ``stat --json``
    form plus each pipeline's ``rates`` (``null`` before a second poll)."""
    out = []
    for s in stats:
        d = s.as_dict()
        rate = rates.get(s.state.pipeline)
        d["rates"] = {"push": rate.push, "handle": rate.handle}
        out.append(d)
    return {"time": round(time.time(), 3), "stats": out}


StatFn = Callable[[], Awaitable[Sequence[PipelineStat]]]


async def watch(stat: StatFn, *, interval: float = 1.0, as_json: bool = False,
                address: str = "", console: Console | None = None,
                out: TextIO | None = None, errors: tuple[type[BaseException], ...] = ()
                ) -> None:
    """Poll ``stat()`` every ``interval`` s until cancelled; redraw a live table,
    or write one JSON line per poll to ``out``. An exception of one of the
    ``errors`` types (the server went away) is shown and the poll goes on."""
    rates = Rates()
    stats: Sequence[PipelineStat] = ()
    if as_json:
        stream = out or sys.stdout
        while True:
            started = time.monotonic()
            try:
                stats = await stat()
            except errors as exc:
                stream.write(json.dumps({"time": round(time.time(), 3),
                                         "error": f"{type(exc).__name__}: {exc}"}) + "\n")
            else:
                rates.update(stats, time.monotonic())
                stream.write(json.dumps(watch_record(stats, rates)) + "\n")
            stream.flush()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    console = console or Console()
    frame = watch_table(stats, rates, address=address, interval=interval)
    with Live(frame, console=console, auto_refresh=False, transient=False) as live:
        while True:
            started = time.monotonic()
            error = ""
            try:
                stats = await stat()
                rates.update(stats, time.monotonic())
            except errors as exc:
                error = f"{type(exc).__name__}: {exc} (retrying)"
            live.update(watch_table(stats, rates, address=address, interval=interval,
                                    error=error), refresh=True)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
