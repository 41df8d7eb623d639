"""A spool directory: the tiny broker behind the tutorial driver; it knows nothing of rrjobs.

Its layout (one atomic rename per change) is in rrjobs' ``docs/writing-a-driver.md``.
Settling a reservation that is gone (it expired, or was settled) raises
``FileNotFoundError``. Every method blocks on the disk: call it from a thread."""

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

OFFSET, MS = 2**63, 1_000_000  # priorities are stored offset; times are in ms


class Spool:
    """One queue directory. Safe to share between threads and processes."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._seq = 0  # increasing (ties between threads are concurrent pushes anyway)

    def create(self) -> None:
        for sub in ("tmp", "new", "cur", "dead"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _sync(self, sub: str) -> None:
        if self.fsync:
            fd = os.open(self.root / sub, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def _name(self, priority: int, delay_ms: int, token: str = "") -> str:
        self._seq = seq = max(self._seq + 1, time.time_ns())  # FIFO, close to wall-clock order
        due = time.time_ns() // MS + delay_ms
        return f"{priority + OFFSET:020d}-{seq:020d}-{due:016d}-{token or uuid.uuid4().hex}"

    def publish(self, items: Iterable[tuple[Mapping[str, str], bytes, int, int]]) -> None:
        """Store (attributes, body, priority, delay in ms) items with one directory sync."""
        for attributes, body, priority, delay_ms in items:
            tmp = self.root / "tmp" / uuid.uuid4().hex
            with open(tmp, "wb") as f:
                f.write(json.dumps(dict(attributes)).encode() + b"\n" + body)
                if self.fsync:
                    os.fsync(f.fileno())
            os.rename(tmp, self.root / "new" / self._name(priority, delay_ms))
        self._sync("new")

    def reserve(self, limit: int, lease_ms: int) -> list[tuple[str, bytes, bytes]]:
        """Reserve up to ``limit`` due messages for ``lease_ms``: (handle, JSON attributes,
        body) triples, in queue order."""
        now = time.time_ns() // MS
        expired = [h for h in os.listdir(self.root / "cur") if int(h[:16]) < now]
        self.release(expired)  # anyone's: that consumer died or was too slow
        got: list[tuple[str, bytes, bytes]] = []
        for name in sorted(os.listdir(self.root / "new")):
            handle = f"{now + lease_ms:016d}~{name}"
            if len(got) < limit and int(name[42:58]) <= now:  # due
                with contextlib.suppress(FileNotFoundError):  # another consumer took it
                    os.rename(self.root / "new" / name, self.root / "cur" / handle)
                    head, _, body = (self.root / "cur" / handle).read_bytes().partition(b"\n")
                    got.append((handle, head, body))
        return got

    def _move(self, handle: str, sub: str, name: str) -> None:
        os.rename(self.root / "cur" / handle, self.root / sub / name)
        self._sync(sub)

    def ack(self, handle: str) -> None:
        os.unlink(self.root / "cur" / handle)
        self._sync("cur")

    def dead_letter(self, handle: str, attributes: Mapping[str, str]) -> None:
        """Into ``dead/`` with ``attributes`` (their headers say why it failed)."""
        body = (self.root / "cur" / handle).read_bytes().partition(b"\n")[2]
        (tmp := self.root / "tmp" / handle).write_bytes(json.dumps(dict(attributes)).encode()
                                                       + b"\n" + body)
        os.rename(tmp, self.root / "dead" / handle[17:])
        self.ack(handle)

    def requeue(self, handle: str, delay_ms: int) -> None:
        """Back to the end of its priority, due in ``delay_ms``, under the same token."""
        self._move(handle, "new", self._name(int(handle[17:37]) - OFFSET, delay_ms, handle[-32:]))

    def release(self, handles: Iterable[str]) -> None:
        """Back to their old places; reservations lost already are skipped."""
        for handle in handles:
            with contextlib.suppress(FileNotFoundError):
                self._move(handle, "new", handle[17:])

    def replace(self, handle: str, item: tuple[Mapping[str, str], bytes, int, int]) -> None:
        """Publish a changed copy, then delete the original (at least once)."""
        self.publish([item])
        self.ack(handle)

    def extend(self, handle: str, lease_ms: int) -> str:
        """Keep the reservation ``lease_ms`` from now; returns its new handle."""
        self._move(handle, "cur", new := f"{time.time_ns() // MS + lease_ms:016d}~{handle[17:]}")
        return new

    def counts(self) -> tuple[int, int, int]:
        """Ready, delayed and reserved messages."""
        now = time.time_ns() // MS
        dues = [int(name[42:58]) for name in os.listdir(self.root / "new")]
        ready = sum(due <= now for due in dues)
        return ready, len(dues) - ready, len(os.listdir(self.root / "cur"))
