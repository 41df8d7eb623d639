"""A spool directory: the tiny "broker" behind the tutorial driver.

This module knows nothing about rrjobs. It is the broker's own client: any
program may publish into a spool with :meth:`Spool.publish`, exactly as a
foreign producer publishes into RabbitMQ with its own client.

One queue is one directory::

    <queue>/tmp/    messages being written (invisible)
    <queue>/new/    ready and delayed messages
    <queue>/cur/    reserved messages (delivered, not yet settled)
    <queue>/dead/   dead-lettered messages

Every state change is one atomic ``rename`` (as in the Maildir format), so
several consumers, in one process or many, share a queue safely and a crash
never leaves a half-moved message. A message file is an *envelope*: one line
of JSON with string attributes (the broker's "headers"), a newline, then the
body bytes, untouched.

File names order the queue. In ``new/``::

    <priority+2**63:020d>-<seq:020d>-<due epoch ms:016d>-<token>

so a sorted listing is priority first, then FIFO; a message is ready once its
due time passed. In ``cur/`` the name is prefixed with the reservation's
deadline: ``<deadline epoch ms:016d>~<name in new/>``. A reservation whose
deadline passed goes back to ``new/`` under its old name (and its old place),
so a consumer that dies loses nothing.

Every method blocks on the file system: call it from a thread
(``asyncio.to_thread``), never from the event loop. Times are wall-clock
epoch milliseconds, so that processes agree on them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_PRIORITY_OFFSET = 2**63
_SUBDIRS = ("tmp", "new", "cur", "dead")


class LostReservation(Exception):
    """The reservation is gone: it expired and went back to the queue (and
    maybe to another consumer), or it was settled already."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A reserved message: where it is in ``cur/`` and what it holds."""

    path: Path
    name: str
    attributes: dict[str, str]
    body: bytes

    @property
    def priority(self) -> int:
        """The priority the message is ordered by."""
        return int(self.name.split("-", 1)[0]) - _PRIORITY_OFFSET

    @property
    def token(self) -> str:
        """The message's unique token (32 hex digits), kept across redeliveries."""
        return self.name.rsplit("-", 1)[1]


@dataclass(frozen=True, slots=True)
class Counts:
    ready: int
    delayed: int
    reserved: int
    dead: int


def encode(attributes: Mapping[str, str], body: bytes) -> bytes:
    """The envelope: JSON attributes on one line, then the body."""
    head = json.dumps(dict(attributes), ensure_ascii=True, separators=(",", ":"))
    return head.encode("ascii") + b"\n" + body


def decode(data: bytes) -> tuple[dict[str, str], bytes]:
    """Attributes and body of an envelope; a file without one is all body."""
    head, sep, body = data.partition(b"\n")
    if sep:
        try:
            attributes = json.loads(head)
        except ValueError:
            attributes = None
        if isinstance(attributes, dict):
            return {str(k): str(v) for k, v in attributes.items()}, body
    return {}, data


def _now_ms() -> int:
    return int(time.time() * 1000)


class Spool:
    """One queue directory. Safe to share between threads and processes."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._last_seq = 0

    # -- layout ---------------------------------------------------------------------

    def create(self) -> None:
        """Create the directories (idempotent)."""
        for sub in _SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _seq(self) -> int:
        """Strictly increasing in this process, close to wall-clock order across processes."""
        with self._lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns())
            return self._last_seq

    def _name(self, priority: int, delay: float, token: str | None = None) -> str:
        if not -_PRIORITY_OFFSET <= priority < _PRIORITY_OFFSET:
            raise ValueError(f"priority {priority} is outside the 64-bit range")
        due = _now_ms() + max(0, math.ceil(delay * 1000))
        return (f"{priority + _PRIORITY_OFFSET:020d}-{self._seq():020d}-{due:016d}-"
                f"{token or uuid.uuid4().hex}")

    def _sync_dir(self, sub: str) -> None:
        if not self.fsync:
            return
        fd = os.open(self.root / sub, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_tmp(self, data: bytes) -> Path:
        tmp = self.root / "tmp" / uuid.uuid4().hex
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        return tmp

    # -- producing ------------------------------------------------------------------------

    def publish(self, attributes: Mapping[str, str], body: bytes, *, priority: int = 0,
                delay: float = 0.0) -> str:
        """Store one message; returns its name. Durable on return when ``fsync``."""
        return self.publish_many([(attributes, body, priority, delay)])[0]

    def publish_many(self, items: Iterable[tuple[Mapping[str, str], bytes, int, float]]
                     ) -> list[str]:
        """Store several messages with one directory sync."""
        names = []
        for attributes, body, priority, delay in items:
            tmp = self._write_tmp(encode(attributes, body))
            name = self._name(priority, delay)
            os.rename(tmp, self.root / "new" / name)
            names.append(name)
        self._sync_dir("new")
        return names

    # -- consuming ------------------------------------------------------------------------

    def reserve(self, limit: int, lease: float) -> list[Delivery]:
        """Reserve up to ``limit`` ready messages for ``lease`` seconds, in queue order.

        Expired reservations (of any consumer) go back to the queue first.
        """
        self.recover_expired()
        now = _now_ms()
        ready = sorted(n for n in os.listdir(self.root / "new") if _ready(n, now))
        deadline = now + int(lease * 1000)
        got: list[Delivery] = []
        for name in ready:
            if len(got) >= limit:
                break
            path = self.root / "cur" / f"{deadline:016d}~{name}"
            try:
                os.rename(self.root / "new" / name, path)
            except FileNotFoundError:
                continue  # another consumer took it
            attributes, body = decode(path.read_bytes())
            got.append(Delivery(path, name, attributes, body))
        return got

    def next_due_in(self) -> float | None:
        """Seconds until the earliest delayed message is due (``None``: none delayed)."""
        now = _now_ms()
        dues = [d for d in map(_due, os.listdir(self.root / "new")) if d is not None and d > now]
        return (min(dues) - now) / 1000 if dues else None

    def recover_expired(self) -> int:
        """Move reservations whose deadline passed back to the queue."""
        now = _now_ms()
        moved = 0
        for entry in os.listdir(self.root / "cur"):
            deadline, _, name = entry.partition("~")
            if deadline.isdigit() and int(deadline) < now:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.root / "cur" / entry, self.root / "new" / name)
                    moved += 1
        return moved

    # -- settling -------------------------------------------------------------------------

    def _move(self, src: Path, dst: Path) -> None:
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            raise LostReservation(str(src)) from None

    def ack(self, delivery: Delivery) -> None:
        """Done: delete the message."""
        try:
            os.unlink(delivery.path)
        except FileNotFoundError:
            raise LostReservation(str(delivery.path)) from None
        self._sync_dir("cur")

    def dead_letter(self, delivery: Delivery) -> None:
        """Move the message to ``dead/``; it is never delivered again."""
        self._move(delivery.path, self.root / "dead" / delivery.name)
        self._sync_dir("dead")

    def release(self, delivery: Delivery, *, delay: float = 0.0,
                keep_place: bool = False) -> None:
        """Give the message back: to its old place in the queue (``keep_place``),
        or to the end of its priority after ``delay`` seconds."""
        name = (delivery.name if keep_place
                else self._name(delivery.priority, delay, delivery.token))
        self._move(delivery.path, self.root / "new" / name)
        self._sync_dir("new")

    def release_many(self, deliveries: Iterable[Delivery]) -> None:
        """Hand back reservations that were never delivered, keeping their places."""
        for delivery in deliveries:
            with contextlib.suppress(LostReservation):
                self._move(delivery.path, self.root / "new" / delivery.name)
        self._sync_dir("new")

    def replace(self, delivery: Delivery, attributes: Mapping[str, str], body: bytes, *,
                delay: float = 0.0) -> None:
        """Publish a changed copy at the end of the queue, then delete the original.

        If the reservation was lost meanwhile the copy stays published (at
        least once) and :class:`LostReservation` is raised.
        """
        self.publish(attributes, body, priority=delivery.priority, delay=delay)
        self.ack(delivery)

    def extend(self, delivery: Delivery, lease: float) -> Delivery:
        """Keep the reservation ``lease`` more seconds from now."""
        deadline = _now_ms() + int(lease * 1000)
        path = self.root / "cur" / f"{deadline:016d}~{delivery.name}"
        self._move(delivery.path, path)
        return Delivery(path, delivery.name, delivery.attributes, delivery.body)

    # -- inspecting -----------------------------------------------------------------------

    def counts(self) -> Counts:
        now = _now_ms()
        dues = [d for d in map(_due, os.listdir(self.root / "new")) if d is not None]
        ready = sum(1 for d in dues if d <= now)
        return Counts(ready=ready, delayed=len(dues) - ready,
                      reserved=len(os.listdir(self.root / "cur")),
                      dead=len(os.listdir(self.root / "dead")))

    def dead(self) -> list[tuple[dict[str, str], bytes]]:
        """The dead-lettered messages, oldest first."""
        out = []
        for name in sorted(os.listdir(self.root / "dead")):
            with contextlib.suppress(FileNotFoundError):
                out.append(decode((self.root / "dead" / name).read_bytes()))
        return out

    def purge(self) -> None:
        """Delete every message and the directories."""
        for sub in _SUBDIRS:
            directory = self.root / sub
            if directory.is_dir():
                for name in os.listdir(directory):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(directory / name)
                directory.rmdir()
        with contextlib.suppress(OSError):
            self.root.rmdir()


def _ready(name: str, now: int) -> bool:
    due = _due(name)
    return due is not None and due <= now


def _due(name: str) -> int | None:
    """The due time encoded in a ``new/`` name; ``None`` for a file that is not ours."""
    parts = name.split("-", 3)
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    return int(parts[2])
