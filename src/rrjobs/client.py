"""Producers over RPC: :class:`Client` (asyncio) and :class:`SyncClient` (scripts,
WSGI views, any thread).

::

    async with rrjobs.Client("tcp://127.0.0.1:6001") as client:
        job_id = await client.push("email.send", {"to": "a@example.com"},
                                   pipeline="emails", delay=60)
        for s in await client.stat():
            print(s.state.pipeline, s.state.active)

    with rrjobs.SyncClient("tcp://127.0.0.1:6001") as client:   # no event loop needed
        client.push(send_email, EmailPayload(to="a@example.com"))

Both speak the server's HTTP/JSON RPC through one
:class:`~rrjobs.rpc.client.RPCClient`, so one connection pool is reused by
every call. Retries (``retries``, default 3) follow the RPC client's rule: a
call is retried when its request certainly never reached the server, or the
server refused it unread (``OverloadedError``); ``stat`` and ``list`` also
after a broken connection, a timeout or an HTTP 503. A push
is never retried once its request may have arrived, so a retry cannot push a
job twice (the caller sees the error and decides).

A :class:`Client` is a :class:`~rrjobs.runtime.producer.MessageSink`:
``app.bind(client)`` sends an app's pushes (``app.push``,
``handler.push``) through it when the app does not run in this process.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import selectors
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from rrjobs.core.message import Message
from rrjobs.rpc.address import DEFAULT_LISTEN
from rrjobs.rpc.client import RPCClient
from rrjobs.rpc.transport import TransportName
from rrjobs.runtime.app import Handler
from rrjobs.runtime.producer import HeadersIn, build_message
from rrjobs.runtime.stats import PipelineStat

T = TypeVar("T")

#: Per-try timeout of a :class:`Client` call, seconds.
DEFAULT_TIMEOUT = 30.0
#: Further tries of a call that may be retried.
DEFAULT_RETRIES = 3


def message(job: str | Handler | Message, payload: Any = b"", *,
            pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
            priority: int = 0, headers: HeadersIn | None = None,
            max_attempts: int | None = None, timeout: float | None = None,
            auto_ack: bool = False, default_pipeline: str | None = None) -> Message:
    """The :class:`Message` of a push: a :class:`Message` as it is; a
    :class:`~rrjobs.Handler` with its job name, payload validation and default
    pipeline; a job name with ``pipeline`` (or ``default_pipeline``)."""
    if isinstance(job, Message):
        return job
    if isinstance(job, Handler):
        return job.message(payload, pipeline=pipeline or (None if job.pipeline
                                                          else default_pipeline),
                           id=id, delay=delay, priority=priority, headers=headers,
                           max_attempts=max_attempts, timeout=timeout, auto_ack=auto_ack)
    return build_message(job, payload, pipeline=pipeline or default_pipeline or "", id=id,
                         delay=delay, priority=priority, headers=headers,
                         max_attempts=max_attempts, timeout=timeout, auto_ack=auto_ack)


class Client:
    """Push jobs to, and inspect, a running ``rrjobs serve`` over its RPC.

    Args:
        address: the server's ``rpc.listen`` (``tcp://host:port`` or ``unix:///path``).
        token: bearer token, when the server requires one (default: the
            `RRJOBS_RPC_TOKEN` variable, read when the client is created).
        timeout: seconds per try of a call (``None``: no limit).
        retries: further tries of a call that may be retried (see the module doc).
        retry_backoff: seconds before the first retry, doubled for each next one.
        pipeline: the pipeline of pushes that name none (and whose handler has none).
        transport: ``"aiohttp"`` (default: a connection pool, for many calls) or
            ``"stdlib"`` (``http.client`` in a thread, a connection per call: a
            script that pushes a few jobs and exits starts faster, as aiohttp is
            never imported).

    Use it from one event loop; calls may run concurrently. ``close()`` (or
    ``async with``) releases the connections.
    """

    def __init__(self, address: str = DEFAULT_LISTEN, *, token: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 retry_backoff: float = 0.1, pipeline: str | None = None,
                 transport: TransportName = "aiohttp") -> None:
        self.rpc = RPCClient(address, timeout=timeout, token=token, retries=retries,
                             retry_backoff=retry_backoff, transport=transport)
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"<rrjobs.Client {self.rpc!r}>"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (the client may be used again afterwards)."""
        await self.rpc.close()

    def message(self, job: str | Handler | Message, payload: Any = b"", *,
                pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
                priority: int = 0, headers: HeadersIn | None = None,
                max_attempts: int | None = None, timeout: float | None = None,
                auto_ack: bool = False) -> Message:
        """The :class:`Message` :meth:`push` would send (to build a :meth:`push_batch`)."""
        return message(job, payload, pipeline=pipeline, id=id, delay=delay, priority=priority,
                       headers=headers, max_attempts=max_attempts, timeout=timeout,
                       auto_ack=auto_ack, default_pipeline=self.pipeline)

    async def push(self, job: str | Handler | Message, payload: Any = b"", *,
                   pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
                   priority: int = 0, headers: HeadersIn | None = None,
                   max_attempts: int | None = None, timeout: float | None = None,  # noqa: ASYNC109 (the job's timeout)
                   auto_ack: bool = False) -> str:
        """Push one job; returns its id once the pipeline's driver accepted it.

        ``job``: a job name, a :class:`~rrjobs.Handler` (its name, its payload
        type checked, its default pipeline) or a ready :class:`Message`.
        ``payload``: bytes as they are, ``str`` as UTF-8, anything else as JSON.
        ``delay`` seconds before it may run; ``priority`` (lower first, 0: the
        pipeline's); ``headers`` (a value: a string or a list of strings);
        ``max_attempts`` and ``timeout``: this job's own retry limit and
        handler timeout, overriding the pipeline's and the handler's."""
        msg = self.message(job, payload, pipeline=pipeline, id=id, delay=delay,
                           priority=priority, headers=headers, max_attempts=max_attempts,
                           timeout=timeout, auto_ack=auto_ack)
        await self.rpc.push(msg)
        return msg.id

    async def push_batch(self, msgs: Sequence[Message]) -> builtins.list[str]:
        """Push messages (built with :meth:`message`) in one call; returns their
        ids. The server stops at the first error; earlier jobs stay pushed."""
        await self.rpc.push_batch(msgs)
        return [m.id for m in msgs]

    async def stat(self) -> builtins.list[PipelineStat]:
        """Every pipeline's state and counters."""
        return await self.rpc.stat()

    async def list(self) -> builtins.list[str]:
        """The names of every pipeline."""
        return await self.rpc.list()

    async def pause(self, *pipelines: str) -> None:
        """Stop consuming these pipelines (pushes are still accepted)."""
        await self.rpc.pause(pipelines)

    async def resume(self, *pipelines: str) -> None:
        """Consume these pipelines again (or for the first time)."""
        await self.rpc.resume(pipelines)


class SyncClient:
    """:class:`Client`'s blocking twin, for code without an event loop: scripts,
    WSGI views, worker threads.

    It runs a :class:`Client` on an event loop in a daemon thread of its own,
    started on first use, so one ``SyncClient`` (and its connection pool) can
    be shared by every thread of a process; it is thread-safe. After a
    ``fork`` (a pre-forking web server) the child starts its own thread and
    connections on first use. Do not call it from a coroutine: it blocks the
    caller's loop; use :class:`Client` there.

    Takes :class:`Client`'s arguments; its methods are :class:`Client`'s,
    blocking.
    """

    def __init__(self, address: str = DEFAULT_LISTEN, *, token: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 retry_backoff: float = 0.1, pipeline: str | None = None,
                 transport: TransportName = "aiohttp") -> None:
        self._settings: dict[str, Any] = {"token": token, "timeout": timeout,
                                          "retries": retries, "retry_backoff": retry_backoff,
                                          "pipeline": pipeline, "transport": transport}
        self.client = Client(address, **self._settings)
        self.address = address
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<rrjobs.SyncClient {self.client.rpc!r}>"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not here
                self._pid = os.getpid()
                self._loop = self._thread = None
                self.client = Client(self.address, **self._settings)
            if self._loop is None:
                # poll(2), not epoll: an epoll set is shared with a forked child,
                # and the child dropping the parent's sockets would unregister
                # them from the parent's loop too
                loop = asyncio.SelectorEventLoop(selectors.PollSelector())
                thread = threading.Thread(target=loop.run_forever, name="rrjobs-sync-client",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, call: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        # the loop first: after a fork it comes with a new Client, which the
        # call must use (the parent's shares the parent's sockets)
        loop = self._running_loop()
        return asyncio.run_coroutine_threadsafe(call(self.client), loop).result()

    def close(self) -> None:
        """Close the connections and stop the client's thread (it starts again
        on next use)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.client.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def message(self, job: str | Handler | Message, payload: Any = b"", **options: Any) -> Message:
        """:meth:`Client.message`."""
        return self.client.message(job, payload, **options)

    def push(self, job: str | Handler | Message, payload: Any = b"", *,
             pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
             priority: int = 0, headers: HeadersIn | None = None,
             max_attempts: int | None = None, timeout: float | None = None,
             auto_ack: bool = False) -> str:
        """:meth:`Client.push`, blocking; returns the job id."""
        msg = self.client.message(job, payload, pipeline=pipeline, id=id, delay=delay,
                                  priority=priority, headers=headers,
                                  max_attempts=max_attempts, timeout=timeout,
                                  auto_ack=auto_ack)
        return self._run(lambda c: c.push(msg))

    def push_batch(self, msgs: Sequence[Message]) -> builtins.list[str]:
        """:meth:`Client.push_batch`, blocking."""
        return self._run(lambda c: c.push_batch(msgs))

    def stat(self) -> builtins.list[PipelineStat]:
        """:meth:`Client.stat`, blocking."""
        return self._run(lambda c: c.stat())

    def list(self) -> builtins.list[str]:
        """:meth:`Client.list`, blocking."""
        return self._run(lambda c: c.list())

    def pause(self, *pipelines: str) -> None:
        """:meth:`Client.pause`, blocking."""
        self._run(lambda c: c.pause(*pipelines))

    def resume(self, *pipelines: str) -> None:
        """:meth:`Client.resume`, blocking."""
        self._run(lambda c: c.resume(*pipelines))
