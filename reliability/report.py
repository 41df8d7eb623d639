"""Renders ``docs/reliability.md`` from ``reliability/results/*.jsonl`` (the full run's rows).

``python -m reliability.report`` writes the page and prints it; ``--check`` only says whether
the page is up to date with the results; ``--results DIR`` and ``--out FILE`` choose other
paths (the short form's scratch rows, for a look). Rows are grouped by ``section``; each
section's table has a row per driver x scenario, and says where a scenario does not apply.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reliability.workload import DRIVERS, RESULTS, ROOT, read_rows

DOC = ROOT / "docs" / "reliability.md"

#: Each section's title, what it measures, and its scenarios in table order.
SECTIONS: dict[str, tuple[str, str]] = {
    "faults": (
        "Faults",
        "A fault in the middle of a stream of jobs. *Recovery* is the time from the fault "
        "until a second of handling reached half the rate before it (or, with too few jobs "
        "left for that, until the first job handled after the restart). The drivers with a "
        "lease run with one of 5 s (2 s in slow-handler); in graceful-stop a job waits in the "
        "prefetch window longer than that lease, and the kit renews the leases of such queued "
        "jobs (before it did, redis, NATS and SQS delivered hundreds of them twice; see the "
        "decisions page).",
    ),
    "network": (
        "Network faults",
        "Faults of the network between a process and its broker, through toxiproxy, on the "
        "producer's connection and on the consumer's separately. The producer pushes 100 "
        "jobs/s through one proxy and `rrjobs serve` consumes through another; the fault comes "
        "after 5 s of flow and lasts 10 s. *Recovery* counts from the start of the fault (its "
        "10 s included) until a second of handling reached half the rate before it; *during* "
        "is the rate over that time, *after* the rate of the backlog and the rest.",
    ),
    "recovery": (
        "Recovery",
        "How fast a consumer is back at its normal rate after a SIGKILL.",
    ),
    "scaleout": (
        "Scale-out",
        "1, 2 and 4 `rrjobs serve` processes on one queue, topic, subscription or stream.",
    ),
    "soak": (
        "Soak",
        "A long run: RSS sampled every second must plateau (the final RSS within 10% of the "
        "RSS at 25% of the run), and the push-to-handle latency.",
    ),
}

#: Scenarios in table order, per section (others' scenarios are appended as found).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "faults": (
        "broker-kill",
        "serve-kill",
        "graceful-stop",
        "slow-handler",
        "poison",
        "kafka-group-kill",
        "emulator-restart",
    ),
}

#: The network scenarios (reliability/test_network.py): each fault on each side's connection.
NETWORK_FAULTS: dict[str, str] = {
    "cut-10s": "a 10 s cut both ways (a blackhole, then the cut connections closed)",
    "latency-500ms": "500 ms of latency each way",
    "bandwidth-64kbs": "64 KB/s each way",
    "reset-peer": "every connection that carries data reset (TCP RST), for 10 s",
}
SCENARIOS["network"] = tuple(
    f"{fault}-{side}" for fault in NETWORK_FAULTS for side in ("producer", "consumer")
)

SCENARIO_TEXT: dict[str, str] = {
    "broker-kill": "1. broker SIGKILLed and restarted mid-stream",
    "serve-kill": "2. `rrjobs serve` SIGKILLed mid-stream and restarted",
    "graceful-stop": "4. graceful stop (SIGTERM) with 1,000 jobs in flight",
    "slow-handler": "5. handler slower than the lease / ack deadline",
    "poison": "6. poison job dead-lettered after max attempts, the pipeline flowing",
    "kafka-group-kill": "7. Kafka: broker kill, two processes in one group",
    "emulator-restart": "8. Pub/Sub: the emulator restarted",
}

SCENARIO_TEXT.update(
    {
        f"{fault}-{side}": f"3. {text}, on the {side}'s connection"
        for fault, text in NETWORK_FAULTS.items()
        for side in ("producer", "consumer")
    }
)

_ONLY = {"kafka-group-kill": "kafka", "emulator-restart": "google_pub_sub"}

#: Why a scenario does not apply to a driver: (section, scenario, driver) -> reason.
NOT_APPLICABLE: dict[tuple[str, str, str], str] = {
    **{
        ("network", scenario, driver): "no network: " + why
        for scenario in SCENARIOS["network"]
        for driver, why in (
            ("memory", "the queue is in the serve process"),
            ("sqlite", "a local file"),
        )
    },
    ("faults", "broker-kill", "memory"): (
        "no broker: the queue is the serve process (see serve-kill)"
    ),
    ("faults", "broker-kill", "sqlite"): "no broker: the file is the serve's (see serve-kill)",
    ("faults", "broker-kill", "google_pub_sub"): (
        "the emulator is the broker: see emulator-restart"
    ),
    ("faults", "serve-kill", "memory"): (
        "not durable: a memory pipeline's jobs die with its process, by design"
    ),
    ("faults", "graceful-stop", "memory"): (
        "not durable: the jobs queued in a memory pipeline end with its process, by design"
    ),
    ("faults", "slow-handler", "memory"): "no lease: a job stays with its handler",
    ("faults", "slow-handler", "amqp"): (
        "no lease: RabbitMQ redelivers only when the channel closes (its consumer_timeout, "
        "30 min by default, closes the channel, it is no lease)"
    ),
    ("faults", "slow-handler", "kafka"): (
        "no per-record lease: only a rebalance takes a held job away (scenario 7)"
    ),
    **{
        ("faults", scenario, driver): f"{_ONLY[scenario]} only"
        for scenario in _ONLY
        for driver in DRIVERS
        if driver != _ONLY[scenario]
    },
}


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _lost(value: Any) -> str:
    return _num(value) if not value else f"**{_num(value)}**"


Column = tuple[str, Callable[[Mapping[str, Any]], str]]

_COUNTS: list[Column] = [
    ("pushed", lambda r: _num(r.get("pushed"))),
    ("handled", lambda r: _num(r.get("handled"))),
    ("lost", lambda r: _lost(r.get("lost"))),
    ("duplicated", lambda r: _num(r.get("duplicated"))),
]
_FAULT: list[Column] = [
    ("recovery s", lambda r: _num(r.get("recovery_s"))),
    ("jobs/s before", lambda r: _num(r.get("rate_before"), 0)),
    ("during", lambda r: _num(r.get("rate_during"), 0)),
    ("after", lambda r: _num(r.get("rate_after"), 0)),
]
COLUMNS: dict[str, list[Column]] = {
    "faults": _COUNTS + _FAULT,
    "network": _COUNTS + _FAULT,
    "recovery": _COUNTS + _FAULT,
    "scaleout": [
        ("processes", lambda r: _num(r.get("processes"))),
        *_COUNTS,
        ("jobs/s", lambda r: _num(r.get("jobs_per_s"), 0)),
    ],
    "soak": [
        ("jobs", lambda r: _num(r.get("jobs"))),
        *_COUNTS[1:],
        ("RSS MB at 25%", lambda r: _num(r.get("rss_mb_25pct"))),
        ("RSS MB final", lambda r: _num(r.get("rss_mb_final"))),
        ("plateau", lambda r: _num(r.get("plateau_ok"))),
        ("p50 ms", lambda r: _num(r.get("p50_ms"))),
        ("p99 ms", lambda r: _num(r.get("p99_ms"))),
        ("jobs/s", lambda r: _num(r.get("jobs_per_s"), 0)),
    ],
}


def _note(r: Mapping[str, Any]) -> str:
    extra = r.get("extra") or {}
    note = extra.get("note", "") if isinstance(extra, Mapping) else ""
    return str(note).replace("|", "\\|").replace("\n", " ")


def _table(section: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = COLUMNS.get(section, _COUNTS)
    head = ["driver", "scenario", *(name for name, _ in columns), "note"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_cell: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault((str(r.get("scenario")), str(r.get("driver"))), []).append(r)
    scenarios = list(SCENARIOS.get(section, ()))
    scenarios += sorted({s for s, _ in by_cell} - set(scenarios))
    drivers = list(DRIVERS) + sorted({d for _, d in by_cell} - set(DRIVERS))
    for scenario in scenarios:
        for driver in drivers:
            found = sorted(
                by_cell.get((scenario, driver), []),
                key=lambda r: (r.get("processes") or 0, r.get("jobs") or 0),
            )
            reason = NOT_APPLICABLE.get((section, scenario, driver))
            if not found:
                if reason is None and section not in SCENARIOS:
                    continue  # another owner's section: only the rows it wrote
                if reason is not None and reason.endswith(" only"):
                    continue  # a one-driver scenario: no row for the others
                cells = ["n/a" if reason else "not run"] * len(columns)
                out.append(
                    f"| {driver} | {scenario} | " + " | ".join(cells) + f" | {reason or ''} |"
                )
                continue
            for r in found:
                cells = [cell(r) for _, cell in columns]
                out.append(f"| {driver} | {scenario} | " + " | ".join(cells) + f" | {_note(r)} |")
    return out


def render(rows: Sequence[Mapping[str, Any]]) -> str:
    """The page: a table per section, from the full run's rows."""
    full = [r for r in rows if r.get("mode") == "full"]
    commits = sorted({str(r.get("commit")) for r in full if r.get("commit")})
    whens = sorted(str(r.get("when")) for r in full if r.get("when"))
    lines = [
        "# Reliability",
        "",
        "<!-- Written by `python -m reliability.report` (`make reliability`) from "
        "reliability/results/*.jsonl; do not edit by hand. -->",
        "",
        "The same fault, scale-out and soak tests on every driver, run by `make reliability` "
        "(`RRJOBS_RELIABILITY=full`) against the harness's real brokers on 127.0.0.1; the CI "
        "runs the same tests with small counts (`make test`). A job is **lost** when its id "
        "was pushed (the push confirmed) and never handled; **duplicated** counts handlings "
        "beyond the first. Every `rrjobs serve` runs `reliability/ledger_app.py`, whose handler "
        "appends the job id to a ledger file before the job is acknowledged.",
        "",
        "Timings come from a 2-core machine shared with other work: read the rates as "
        "orders of magnitude, and compare rows of one run only.",
        "",
    ]
    if whens:
        lines += [f"Run {whens[0]} to {whens[-1]}, commits {', '.join(commits)}.", ""]
    for section, (title, text) in SECTIONS.items():
        got = [r for r in full if r.get("section") == section]
        lines += [f"## {title}", "", text, ""]
        if section in SCENARIOS:
            lines += [f"- `{s}`: {SCENARIO_TEXT[s]}" for s in SCENARIOS[section]] + [""]
        if not got and section not in SCENARIOS:
            lines += ["No results yet.", ""]
            continue
        lines += [*_table(section, got), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the page differs from what the results give",
    )
    parser.add_argument(
        "--all-modes",
        action="store_true",
        help="render short-form rows too (a look at a CI run's scratch rows)",
    )
    args = parser.parse_args(argv)
    rows = read_rows(args.results)
    if args.all_modes:
        rows = [{**r, "mode": "full"} for r in rows]
    text = render(rows)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m reliability.report", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
