"""``python -m integration.brokers up|status|env|down [names...]``.

``up`` starts brokers detached (they outlive this command), records them in a state file
and prints ``export RRJOBS_...=...`` lines, so ``eval "$(python -m integration.brokers up)"``
points the test suite at them. ``down`` stops every process group (or container) it started.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .base import (
    BrokerUnavailable,
    cache_dir,
    group_members,
    keep_data,
    process_start_ticks,
    shown,
    stop_process_group,
)
from .containers import container_running, remove_container
from .provider import SPECS, acquire, expand_names

NAMES_HELP = "broker names: " + " ".join(SPECS) + " (sqs = both SQS servers); default: all"


def state_dir() -> Path:
    """``$RRJOBS_BROKERS_STATE_DIR`` or ``<cache>/brokers``."""
    explicit = os.environ.get("RRJOBS_BROKERS_STATE_DIR")
    return Path(explicit).expanduser() if explicit else cache_dir() / "brokers"


def state_file() -> Path:
    return state_dir() / "state.json"


@contextlib.contextmanager
def locked_state() -> Iterator[dict[str, dict[str, Any]]]:
    """The state file's broker entries, under an exclusive lock, written back on exit."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "state.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = state_file()
        entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                entries = json.loads(path.read_text()).get("brokers", {})
            except (OSError, ValueError):
                entries = {}
        yield entries
        if entries:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"brokers": entries}, indent=2, sort_keys=True) + "\n")
            tmp.replace(path)
        elif path.exists():
            path.unlink()


def entry_alive(entry: dict[str, Any]) -> bool:
    if entry.get("container_id"):
        return container_running(entry["container_id"])
    pgid = entry.get("pgid")
    if not pgid:
        return False
    leader_ticks = process_start_ticks(pgid)
    if leader_ticks is not None and leader_ticks != entry.get("leader_start_ticks"):
        return False  # the PID was reused by an unrelated process
    return bool(group_members(pgid))


def stop_entry(entry: dict[str, Any]) -> bool:
    """Stop one recorded broker and remove its data dir. True when nothing is left."""
    clean = True
    if entry.get("container_id"):
        clean = remove_container(entry["container_id"])
    elif entry.get("pgid") and entry_alive(entry):
        clean = stop_process_group(int(entry["pgid"]))
    data_dir = entry.get("data_dir")
    if clean and data_dir and not keep_data():
        shutil.rmtree(data_dir, ignore_errors=True)
    return clean


def exports(entry: dict[str, Any]) -> list[str]:
    return [f"export {key}={shlex.quote(value)}" for key, value in entry.get("env", {}).items()]


def cmd_up(names: list[str]) -> int:
    failed = 0
    with locked_state() as entries:
        for name in expand_names(names):
            current = entries.get(name)
            if current and entry_alive(current):
                pid = current.get("pid")
                print(f"[brokers] {name} already running (pid {pid})", file=sys.stderr)
                continue
            if current:
                stop_entry(current)
                del entries[name]
            try:
                handle = acquire(name, detached=True, use_env=False)
            except BrokerUnavailable as exc:
                print(f"[brokers] {name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            entry: dict[str, Any] = asdict(handle.broker)
            entry["env"] = dict(handle.broker.env)
            entry["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if handle.broker.pid:
                entry["leader_start_ticks"] = process_start_ticks(handle.broker.pid)
            entries[name] = entry
        for name in expand_names(names):
            if name in entries:
                print("\n".join(exports(entries[name])))
    return 1 if failed else 0


def cmd_status(names: list[str], as_json: bool) -> int:
    with locked_state() as entries:
        selected = {n: e for n, e in entries.items() if not names or n in expand_names(names)}
        if as_json:
            report = {n: {**e, "alive": entry_alive(e)} for n, e in selected.items()}
            print(json.dumps(report, indent=2, sort_keys=True))
            return 0
        if not selected:
            print(f"no brokers recorded in {state_file()}")
            return 0
        print(f"{'broker':<14} {'state':<6} {'pid':>8}  {'provider':<14} endpoint")
        for name, entry in selected.items():
            state = "up" if entry_alive(entry) else "DEAD"
            pid = entry.get("pid") or (entry.get("container_id") or "-")[:12]
            endpoint = shown(entry["endpoint"])  # a password masked, as in the start notes
            print(f"{name:<14} {state:<6} {pid!s:>8}  {entry['provider']:<14} {endpoint}")
            if entry.get("log_path"):
                print(f"{'':<14} log: {entry['log_path']}")
    return 0


def cmd_env(names: list[str]) -> int:
    with locked_state() as entries:
        for name, entry in entries.items():
            if (not names or name in expand_names(names)) and entry_alive(entry):
                print("\n".join(exports(entry)))
    return 0


def cmd_down(names: list[str]) -> int:
    failed = 0
    with locked_state() as entries:
        for name in [n for n in list(entries) if not names or n in expand_names(names)]:
            entry = entries[name]
            if stop_entry(entry):
                print(f"[brokers] {name} stopped", file=sys.stderr)
                del entries[name]
            else:
                print(f"[brokers] {name}: processes survived; kept in state", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m integration.brokers",
        description="Start, inspect and stop the brokers the integration tests use.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start brokers detached; print export lines")
    up.add_argument("names", nargs="*", help=NAMES_HELP)
    status = sub.add_parser("status", help="endpoint, PID and liveness of started brokers")
    status.add_argument("names", nargs="*", help=NAMES_HELP)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    env = sub.add_parser("env", help="print export lines for the running brokers")
    env.add_argument("names", nargs="*", help=NAMES_HELP)
    down = sub.add_parser("down", help="stop started brokers and remove their data")
    down.add_argument("names", nargs="*", help=NAMES_HELP)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args.names)
        if args.command == "status":
            return cmd_status(args.names, args.json)
        if args.command == "env":
            return cmd_env(args.names)
        return cmd_down(args.names)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    return 2
