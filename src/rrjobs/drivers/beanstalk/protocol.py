"""A small asyncio client of beanstalkd's text protocol (``doc/protocol.txt``).

One :class:`Connection` is one TCP (or unix socket) connection. Commands may be
issued concurrently from many tasks: each is written at once and its reply is
matched in order (beanstalkd answers a connection's commands in the order it
reads them), so commands are pipelined. A command that blocks the server side
(``reserve-with-timeout`` with a timeout) holds back the replies of the commands
written after it until it returns.

A reply the client cannot read (an unknown word, a bad number, a body without
its ``\\r\\n``, a line over :data:`MAX_LINE`) is a :class:`ProtocolError`: the
connection is closed and every command waiting on it fails with that error.
A command cancelled before its reply arrived leaves the connection usable: the
reply is read and dropped, and ``orphan`` (given at :func:`connect`) receives
a job the server reserved for it, so the caller can release it.

No rrjobs import: this module knows beanstalkd only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: The longest reply line read (beanstalkd's longest is a few dozen bytes).
MAX_LINE = 1024
#: beanstalkd's largest priority (lower is more urgent).
MAX_PRIORITY = 2**32 - 1
#: What a tube name may hold (beanstalkd: letters, digits, ``-+/;.$_()``, not leading ``-``).
TUBE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
MAX_TUBE = 200

#: Replies followed by a body: the position of the body's size among the reply's words.
_BODY_SIZE = {b"RESERVED": 2, b"FOUND": 2, b"OK": 1}
#: Replies that mean "the server cannot do that", raised as :class:`CommandError`.
_ERRORS = frozenset({b"OUT_OF_MEMORY", b"INTERNAL_ERROR", b"BAD_FORMAT", b"UNKNOWN_COMMAND",
                     b"EXPECTED_CRLF", b"JOB_TOO_BIG", b"DRAINING", b"NOT_IGNORED"})
#: Replies whose words after the first are all numbers (ids, counts, sizes).
_NUMERIC = frozenset({b"INSERTED", b"BURIED", b"RESERVED", b"WATCHING", b"FOUND", b"KICKED",
                      b"OK"})
#: Every reply word of the protocol (anything else is a protocol error).
_WORDS = frozenset({b"INSERTED", b"BURIED", b"USING", b"RESERVED", b"DEADLINE_SOON",
                    b"TIMED_OUT", b"DELETED", b"NOT_FOUND", b"RELEASED", b"TOUCHED",
                    b"WATCHING", b"FOUND", b"KICKED", b"OK", b"PAUSED"}) | _ERRORS


class BeanstalkError(Exception):
    """Any failure of a beanstalkd command."""


class ProtocolError(BeanstalkError):
    """A reply the client cannot read; the connection is closed."""


class ConnectionLost(BeanstalkError, ConnectionError):
    """The connection closed (or was closed) before the reply arrived."""


class CommandError(BeanstalkError):
    """beanstalkd refused the command (``BAD_FORMAT``, ``JOB_TOO_BIG``, ...)."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"beanstalkd: {command}: {reply}")
        self.reply = reply


class NotFound(BeanstalkError):
    """``NOT_FOUND``: no such job, or not reserved by this connection."""


class TimedOut(BeanstalkError):
    """``TIMED_OUT``: no job became ready within the reserve timeout."""


class DeadlineSoon(BeanstalkError):
    """``DEADLINE_SOON``: a job reserved by this connection is about to time out."""


class Buried(BeanstalkError):
    """``put`` answered ``BURIED <id>``: the server stored the job buried (out of memory)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"beanstalkd buried job {job_id} on put (out of memory)")
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: its word, its other words, and its body (``b""`` if none)."""

    word: bytes
    args: tuple[bytes, ...]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Reserved:
    """A job reserved by this connection."""

    id: int
    body: bytes


def check_tube(name: str) -> str:
    """``name`` if beanstalkd takes it as a tube name, else ``ValueError``."""
    if not name or len(name) > MAX_TUBE or name[0] == "-" or not set(name) <= TUBE_CHARS:
        raise ValueError(f"{name!r} is not a beanstalkd tube name (1 to {MAX_TUBE} of "
                         "A-Z a-z 0-9 - + / ; . $ _ ( ), not starting with '-')")
    return name


def parse_stats(body: bytes) -> dict[str, str]:
    """A ``stats*`` reply's YAML dictionary (``key: value`` lines after ``---``)."""
    out: dict[str, str] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("---"):
            out[key.strip()] = value.strip()
    return out


def _number(raw: bytes, reply: bytes) -> int:
    if not raw.isdigit() or len(raw) > 20:
        raise ProtocolError(f"beanstalkd reply {reply[:80]!r}: {raw[:40]!r} is not a number")
    return int(raw)


Orphan = Callable[["Connection", Reply], None]


class Connection:
    """One connection to beanstalkd; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 orphan: Orphan | None = None) -> None:
        self._reader = reader
        self._writer = writer
        self._orphan = orphan
        self._waiting: collections.deque[tuple[asyncio.Future[Reply], str]] = (
            collections.deque())
        self._closed: BaseException | None = None
        #: commands written in this turn of the event loop, sent together by _flush
        self._out: list[bytes] = []
        self._task = asyncio.get_running_loop().create_task(self._read_loop(),
                                                            name="beanstalk-reader")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def settle(self, within: float) -> None:
        """Wait up to ``within`` seconds for the replies of the commands sent so far
        (beanstalkd may drop the commands it has not read when the connection closes)."""
        pending = [future for future, _ in self._waiting if not future.done()]
        if pending:
            await asyncio.wait(pending, timeout=within)

    async def close(self) -> None:
        """Close the connection; commands waiting fail with :class:`ConnectionLost`."""
        self._flush()  # what was posted is still sent
        self._fail(ConnectionLost("connection closed"))
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    # -- the wire -----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        self._writer.close()

    async def _read_loop(self) -> None:
        reader = self._reader
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError:
                    raise ProtocolError("beanstalkd reply line too long") from None
                if len(line) > MAX_LINE:
                    raise ProtocolError(f"beanstalkd reply line too long ({len(line)} bytes)")
                words = tuple(line[:-2].split(b" "))
                word = words[0]
                if word not in _WORDS:
                    raise ProtocolError(f"unknown beanstalkd reply {line[:80]!r}")
                if word in _NUMERIC:
                    for arg in words[1:]:
                        _number(arg, line)
                body = b""
                at = _BODY_SIZE.get(word)
                if at is not None:
                    if len(words) != at + 1:
                        raise ProtocolError(f"beanstalkd reply {line[:80]!r}: wrong length")
                    size = _number(words[at], line)
                    data = await reader.readexactly(size + 2)
                    if data[-2:] != b"\r\n":
                        raise ProtocolError(f"beanstalkd reply {line[:80]!r}: body not "
                                            "followed by CRLF")
                    body = data[:-2]
                self._dispatch(Reply(word, words[1:], body))
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            self._fail(ConnectionLost("beanstalkd closed the connection"))
        except ProtocolError as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(ConnectionLost(f"beanstalkd connection: {exc}"))

    def _dispatch(self, reply: Reply) -> None:
        if not self._waiting:
            raise ProtocolError(f"unexpected beanstalkd reply {reply.word!r} (no command)")
        future, _ = self._waiting.popleft()
        if future.done():  # cancelled: the reply is read and dropped
            if self._orphan is not None:
                self._orphan(self, reply)
        else:
            future.set_result(reply)

    def _send(self, command: bytes, body: bytes | None = None) -> asyncio.Future[Reply]:
        if self._closed is not None:
            raise ConnectionLost(f"beanstalkd connection is closed ({self._closed})")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        name = command.split(b" ", 1)[0].decode("ascii", "replace")
        self._waiting.append((future, name))
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self._flush)
        if body is None:
            out.append(command + b"\r\n")
        else:
            out.extend((command, b"\r\n", body, b"\r\n"))
        return future

    def _flush(self) -> None:
        """Write the commands of this turn in one send (a syscall each costs more than
        the command itself)."""
        out, self._out = self._out, []
        if out and self._closed is None:
            self._writer.write(b"".join(out))

    async def call(self, command: bytes, body: bytes | None = None) -> Reply:
        """Send one command (and its body), return its reply; the protocol's error
        replies raise (:class:`CommandError`, :class:`NotFound`, :class:`TimedOut`,
        :class:`DeadlineSoon`)."""
        reply = await self._send(command, body)
        return _checked(command, reply)

    def post(self, command: bytes,
             on_error: Callable[[BaseException], object] | None = None) -> None:
        """Send ``command`` without waiting for its reply; its failure (an error reply,
        the connection lost) goes to ``on_error``, or is dropped."""
        future = self._send(command)
        if on_error is None:
            future.add_done_callback(_consume)
        else:
            future.add_done_callback(lambda f: _report(command, f, on_error))

    async def drain(self) -> None:
        """Wait until the written commands left the write buffer (flow control)."""
        self._flush()
        await self._writer.drain()

    # -- commands -----------------------------------------------------------------------

    async def put(self, body: bytes, priority: int, delay: int, ttr: int) -> int:
        """Store a job in the used tube; its id."""
        reply = await self.call(b"put %d %d %d %d" % (priority, delay, ttr, len(body)), body)
        if reply.word == b"BURIED":
            raise Buried(_number(reply.args[0], reply.word))
        return _one_number(reply, b"INSERTED")

    async def put_many(self, jobs: Sequence[tuple[bytes, int, int, int]]) -> list[int]:
        """``put`` each (body, priority, delay, ttr), pipelined; their ids, in order.
        Raises the first failure once every reply has arrived."""
        futures = [self._send(b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)
                   for body, pri, delay, ttr in jobs]
        await self.drain()
        replies = await asyncio.gather(*futures, return_exceptions=True)
        ids: list[int] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            checked = _checked(b"put", reply)
            if checked.word == b"BURIED":
                raise Buried(_number(checked.args[0], checked.word))
            ids.append(_one_number(checked, b"INSERTED"))
        return ids

    async def use(self, tube: str) -> None:
        reply = await self.call(b"use " + check_tube(tube).encode("ascii"))
        _expect(reply, b"USING")

    async def watch(self, tube: str) -> int:
        return _one_number(await self.call(b"watch " + check_tube(tube).encode("ascii")),
                           b"WATCHING")

    async def ignore(self, tube: str) -> int:
        return _one_number(await self.call(b"ignore " + check_tube(tube).encode("ascii")),
                           b"WATCHING")

    async def reserve(self, wait: int) -> Reserved | None:
        """``reserve-with-timeout``: a job, or ``None`` when none came within
        ``wait`` whole seconds (0: only one ready now). ``DEADLINE_SOON`` (a job
        of this connection nears its TTR) raises :class:`DeadlineSoon`."""
        try:
            reply = await self.call(b"reserve-with-timeout %d" % max(0, wait))
        except TimedOut:
            return None
        return _reserved(reply)

    async def reserve_many(self, n: int) -> list[Reserved]:
        """Up to ``n`` jobs ready now: ``n`` pipelined ``reserve-with-timeout 0``."""
        futures = [self._send(b"reserve-with-timeout 0") for _ in range(n)]
        try:
            replies = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for future in futures:  # a reserved job's reply goes to ``orphan``
                future.cancel()
            raise
        got: list[Reserved] = []
        failure: BaseException | None = None
        for reply in replies:
            if isinstance(reply, BaseException):
                failure = failure or reply
            elif reply.word == b"RESERVED":
                got.append(_reserved(reply))
            elif reply.word not in (b"TIMED_OUT", b"DEADLINE_SOON"):
                failure = failure or _error(b"reserve-with-timeout", reply)
        if failure is not None and not got:
            raise failure
        return got

    async def delete(self, job_id: int) -> None:
        _expect(await self.call(b"delete %d" % job_id), b"DELETED")

    async def release(self, job_id: int, priority: int, delay: int) -> None:
        reply = await self.call(b"release %d %d %d" % (job_id, priority, delay))
        if reply.word == b"BURIED":
            raise Buried(job_id)
        _expect(reply, b"RELEASED")

    async def bury(self, job_id: int, priority: int) -> None:
        _expect(await self.call(b"bury %d %d" % (job_id, priority)), b"BURIED")

    async def touch(self, job_id: int) -> None:
        _expect(await self.call(b"touch %d" % job_id), b"TOUCHED")

    async def kick(self, bound: int) -> int:
        """Kick up to ``bound`` buried (else delayed) jobs of the used tube."""
        return _one_number(await self.call(b"kick %d" % bound), b"KICKED")

    async def kick_job(self, job_id: int) -> None:
        _expect(await self.call(b"kick-job %d" % job_id), b"KICKED")

    async def peek(self, job_id: int) -> Reserved | None:
        """The job ``job_id`` (in any state), ``None`` if it does not exist."""
        return await self._peek(b"peek %d" % job_id)

    async def peek_buried(self) -> Reserved | None:
        """The next buried job of the used tube, ``None`` if none."""
        return await self._peek(b"peek-buried")

    async def peek_ready(self) -> Reserved | None:
        return await self._peek(b"peek-ready")

    async def _peek(self, command: bytes) -> Reserved | None:
        try:
            reply = await self.call(command)
        except NotFound:
            return None
        _expect(reply, b"FOUND")
        return Reserved(_number(reply.args[0], reply.word), reply.body)

    async def stats_tube(self, tube: str) -> dict[str, str] | None:
        """``stats-tube``: the tube's counters, ``None`` if it does not exist."""
        try:
            reply = await self.call(b"stats-tube " + check_tube(tube).encode("ascii"))
        except NotFound:
            return None
        _expect(reply, b"OK")
        return parse_stats(reply.body)

    async def stats_job(self, job_id: int) -> dict[str, str] | None:
        try:
            reply = await self.call(b"stats-job %d" % job_id)
        except NotFound:
            return None
        _expect(reply, b"OK")
        return parse_stats(reply.body)

    async def stats(self) -> dict[str, str]:
        reply = await self.call(b"stats")
        _expect(reply, b"OK")
        return parse_stats(reply.body)


def _consume(future: asyncio.Future[Reply]) -> None:
    if not future.cancelled():
        future.exception()


def _report(command: bytes, future: asyncio.Future[Reply],
            on_error: Callable[[BaseException], object]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is None:
        reply = future.result()
        if reply.word in _ERRORS or reply.word == b"NOT_FOUND":
            exc = _error(command, reply)
    if exc is not None:
        on_error(exc)


def _error(command: bytes, reply: Reply) -> BeanstalkError:
    name = command.split(b" ", 1)[0].decode("ascii", "replace")
    text = b" ".join((reply.word, *reply.args)).decode("ascii", "replace")
    if reply.word == b"NOT_FOUND":
        return NotFound(f"beanstalkd: {name}: NOT_FOUND")
    if reply.word == b"TIMED_OUT":
        return TimedOut(f"beanstalkd: {name}: TIMED_OUT")
    if reply.word == b"DEADLINE_SOON":
        return DeadlineSoon(f"beanstalkd: {name}: DEADLINE_SOON")
    return CommandError(name, text)


def _checked(command: bytes, reply: Reply) -> Reply:
    if reply.word in _ERRORS or reply.word in (b"NOT_FOUND", b"TIMED_OUT", b"DEADLINE_SOON"):
        raise _error(command, reply)
    return reply


def _expect(reply: Reply, word: bytes) -> None:
    if reply.word != word:
        raise ProtocolError(f"beanstalkd answered {reply.word!r}, expected {word!r}")


def _one_number(reply: Reply, word: bytes) -> int:
    _expect(reply, word)
    if len(reply.args) != 1:
        raise ProtocolError(f"beanstalkd reply {reply.word!r}: expected one number")
    return _number(reply.args[0], reply.word)


def _reserved(reply: Reply) -> Reserved:
    _expect(reply, b"RESERVED")
    return Reserved(_number(reply.args[0], reply.word), reply.body)


async def connect(addr: str, within: float, orphan: Orphan | None = None) -> Connection:
    """Connect to ``addr``: ``tcp://host:port``, ``host:port`` or ``unix:///path``,
    within ``within`` seconds."""
    limit = 1 << 16
    async with asyncio.timeout(within):
        if addr.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(addr[len("unix://"):],
                                                                limit=limit)
        else:
            host, port = split_addr(addr)
            reader, writer = await asyncio.open_connection(host, port, limit=limit)
    return Connection(reader, writer, orphan)


def split_addr(addr: str) -> tuple[str, int]:
    """``(host, port)`` of ``tcp://host:port`` or ``host:port`` (port 11300 if none)."""
    rest = addr.removeprefix("tcp://").rstrip("/")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, ""
    if not host:
        raise ValueError(f"{addr!r}: no host")
    if port and not port.isdigit():
        raise ValueError(f"{addr!r}: bad port {port!r}")
    return host, int(port) if port else 11300
