"""``rrjobs sqlite …``: tooling for the sqlite driver's files. ``inspect`` opens a
file read-only (never creating, migrating or locking it: safe next to a running
server).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from rrjobs.drivers.sqlite.schema import APPLICATION_ID, LATEST_VERSION, schema_version

#: One pipeline's summary (``oldest_*``: the job that entered the queue first,
#: ``oldest_at`` its ``created_at``; ``next_due_at``: the next delay's due time; ms).
FIELDS = ("pipeline", "ready", "delayed", "reserved", "dead", "oldest_id", "oldest_name",
          "oldest_at", "next_due_at")


@click.group(name="sqlite")
def sqlite_group() -> None:
    """Tools for the sqlite driver's database files."""


def summarize(conn: sqlite3.Connection, now_ms: int) -> list[dict[str, Any]]:
    """Every pipeline of the file (:data:`FIELDS`), in name order (one scan)."""
    dead = dict(conn.execute("SELECT pipeline, count(*) FROM rrjobs_dead GROUP BY pipeline"))
    rows = conn.execute(
        "SELECT pipeline, total(reserved_by IS NULL AND available_at <= :now), "
        "total(reserved_by IS NULL AND available_at > :now), total(reserved_by IS NOT NULL), "
        "id, name, min(created_at) FROM rrjobs_jobs GROUP BY pipeline",
        {"now": now_ms}).fetchall()
    due = dict(conn.execute("SELECT pipeline, min(available_at) FROM rrjobs_jobs WHERE "
                            "reserved_by IS NULL AND available_at > ? GROUP BY pipeline",
                            (now_ms,)))
    out = [(p, int(r), int(d), int(s), int(dead.pop(p, 0)), i, n, c, due.get(p))
           for p, r, d, s, i, n, c in rows]
    out.extend((p, 0, 0, 0, int(c), None, None, None, None) for p, c in dead.items())
    return [dict(zip(FIELDS, row, strict=True)) for row in sorted(out, key=lambda r: r[0])]


def read_file(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """File facts and per-pipeline summaries of ``path``, read-only. Raises
    :class:`click.ClickException` when it is not an rrjobs file."""
    file = Path(path)
    if not file.is_file():
        raise click.ClickException(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise click.ClickException(f"{path}: cannot open: {exc}") from None
    try:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(f"{path}: not an SQLite database ({exc})") from None
        version = schema_version(conn)
        if app_id != APPLICATION_ID or version < 1:
            raise click.ClickException(f"{path}: not an rrjobs sqlite-driver file")
        if version > LATEST_VERSION:
            raise click.ClickException(
                f"{path}: schema version {version} is newer than this rrjobs ({LATEST_VERSION})")
        now = time.time_ns() // 1_000_000
        facts = {"file": str(file.resolve()), "schema_version": version,
                 "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                 "now_ms": now}
        return facts, summarize(conn, now)
    except sqlite3.Error as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    finally:
        conn.close()


def _age(now_ms: int, at_ms: int | None) -> str:
    if at_ms is None:
        return ""
    seconds = max(0.0, (now_ms - at_ms) / 1000)
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


@sqlite_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(file: str, as_json: bool) -> None:
    """Show the queued, delayed, reserved and dead-lettered jobs of FILE per
    pipeline, and each pipeline's oldest job. Read-only."""
    facts, summaries = read_file(file)
    now = int(facts["now_ms"])
    if as_json:
        click.echo(json.dumps({**facts, "pipelines": summaries}, indent=2))
        return
    console = Console()
    console.print(f"{facts['file']}  (schema v{facts['schema_version']}, "
                  f"journal {facts['journal_mode']})")
    if not summaries:
        console.print("no jobs")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("pipeline", "ready", "delayed", "reserved", "dead", "oldest job", "age",
                "next due in"):
        table.add_column(col, justify="left" if col in ("pipeline", "oldest job") else "right")
    for s in summaries:
        name, id_ = s["oldest_name"], s["oldest_id"]
        oldest = f"{name} {id_}" if id_ or name else ""
        due = "" if s["next_due_at"] is None else f"{max(0, s['next_due_at'] - now) / 1000:.3f}s"
        table.add_row(*(str(s[k]) for k in FIELDS[:5]), oldest, _age(now, s["oldest_at"]), due)
    console.print(table)
