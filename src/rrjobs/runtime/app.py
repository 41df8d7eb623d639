"""``App``: where handlers are registered by job name.

``rrjobs serve`` finds the application object by import path (``module:attr``),
as Python job tools do::

    app = rrjobs.App()

    @app.handler("email.send")
    async def send(job: rrjobs.Job) -> None: ...

    @app.handler("thumbnail", executor="process")
    def thumbnail(job: rrjobs.JobData) -> None: ...   # CPU-bound, in a process pool

* ``async def`` handlers run on the event loop and receive the :class:`Job`.
* plain ``def`` handlers run in a thread pool and receive the :class:`Job`
  (read its fields; its settle methods are coroutines, so a sync handler's
  outcome is its return or exception).
* ``executor="process"`` handlers must be importable module-level functions;
  they run in a process pool and receive a picklable :class:`JobData`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from rrjobs.core.errors import NoHandlerError
from rrjobs.core.message import Message
from rrjobs.runtime.data import JobData
from rrjobs.runtime.producer import HeadersIn, MessageSink, build_message
from rrjobs.runtime.typed import Signature, signature_of

Executor = Literal["auto", "async", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["App", "Executor", "Handler", "HandlerSpec", "JobData", "load_app"]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: the function, where it runs, its timeout (None =
    the pool's ``exec_ttl``), what its parameters receive (``None``: the job
    alone) and the pipeline its jobs are pushed to by default."""

    name: str
    func: Callable[..., Any]
    executor: Literal["async", "thread", "process"]
    timeout: float | None = None
    signature: Signature | None = None
    pipeline: str | None = None


class Handler:
    """What ``@app.handler(...)`` returns: the function, still callable as it
    was, and a typed producer of its jobs::

        @app.handler("email.send", pipeline="emails")
        async def send_email(payload: EmailPayload) -> None: ...

        await send_email.push(EmailPayload(to="a@example.com"), delay=60)

    ``push`` validates the payload against the handler's payload type, then
    sends it through ``via`` when given (an :class:`~rrjobs.Client`), otherwise
    through the app's sink (see :meth:`App.push`).
    """

    def __init__(self, app: App, spec: HandlerSpec, func: Callable[..., Any]) -> None:
        self.app = app
        self.spec = spec
        self.job_name = spec.name
        self.pipeline = spec.pipeline
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<rrjobs.Handler {self.job_name!r} -> {self.func.__qualname__}>"

    def message(self, payload: Any = b"", *, pipeline: str | None = None, id: str | None = None,
                delay: float = 0.0, priority: int = 0, headers: HeadersIn | None = None,
                max_attempts: int | None = None, timeout: float | None = None,
                auto_ack: bool = False) -> Message:
        """The :class:`Message` :meth:`push` would send (for ``push_batch``)."""
        return build_message(self.job_name, payload, pipeline=pipeline or self.pipeline or "",
                             id=id, delay=delay, priority=priority, headers=headers,
                             max_attempts=max_attempts, timeout=timeout, auto_ack=auto_ack,
                             signature=self.spec.signature)

    async def push(self, payload: Any = b"", *, via: MessageSink | None = None,
                   pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
                   priority: int = 0, headers: HeadersIn | None = None,
                   max_attempts: int | None = None, timeout: float | None = None,  # noqa: ASYNC109 (the job's timeout)
                   auto_ack: bool = False) -> str:
        """Push one job for this handler; returns its id."""
        msg = self.message(payload, pipeline=pipeline, id=id, delay=delay, priority=priority,
                           headers=headers, max_attempts=max_attempts, timeout=timeout,
                           auto_ack=auto_ack)
        await self.app.sink(via).push(msg)
        return msg.id


class App:
    """The registry of job handlers. Not thread-safe: register at import time."""

    def __init__(self, name: str = "rrjobs") -> None:
        self.name = name
        self._handlers: dict[str, HandlerSpec] = {}
        self._fallback: HandlerSpec | None = None
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        #: the running runtime serving this app (set by Jobs.start)
        self._runtime: MessageSink | None = None
        #: where pushes go when no runtime runs the app (see bind)
        self._client: MessageSink | None = None

    @staticmethod
    def _spec(name: str, func: Callable[..., Any], executor: Executor,
              timeout: float | None, pipeline: str | None = None) -> HandlerSpec:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0")
        is_async = inspect.iscoroutinefunction(func)
        kind: Literal["async", "thread", "process"]
        if executor == "auto":
            kind = "async" if is_async else "thread"
        elif executor == "async":
            if not is_async:
                raise TypeError(f"handler {name!r}: executor='async' needs an async def")
            kind = "async"
        elif executor in ("thread", "process"):
            if is_async:
                raise TypeError(f"handler {name!r}: executor={executor!r} needs a plain def")
            kind = executor
        else:
            raise ValueError(f"handler {name!r}: unknown executor {executor!r}")
        signature = signature_of(name, func, process=kind == "process")
        return HandlerSpec(name, func, kind, timeout, signature, pipeline)

    def add_handler(self, name: str, func: Callable[..., Any], *, executor: Executor = "auto",
                    timeout: float | None = None, pipeline: str | None = None) -> Handler:
        """Register ``func`` for jobs named ``name``. A name is registered once.

        ``pipeline``: where :meth:`push` sends this job when the push names no
        pipeline. The handler's parameters follow :mod:`rrjobs.runtime.typed`'s
        rules (a typed payload is validated before the handler runs)."""
        if name in self._handlers:
            raise ValueError(f"a handler for job {name!r} is already registered")
        spec = self._spec(name, func, executor, timeout, pipeline)
        handler = Handler(self, spec, func)
        if spec.executor == "process" and getattr(func, "__qualname__", "") == func.__name__:
            # run the module-level Handler in the pool: it pickles by reference
            # where the decorated module attribute is the Handler, not func
            spec = HandlerSpec(name, _ByName(func), spec.executor, timeout, spec.signature,
                               pipeline)
            handler.spec = spec
        self._handlers[name] = spec
        return handler

    def handler(self, name: str | None = None, *, executor: Executor = "auto",
                timeout: float | None = None,
                pipeline: str | None = None) -> Callable[[Callable[..., Any]], Handler]:
        """Decorator: register the function for job ``name`` (default: its
        ``__name__``); returns its :class:`Handler` (the function, callable as
        before, plus ``push``)."""

        def deco(func: Callable[..., Any]) -> Handler:
            return self.add_handler(name or func.__name__, func, executor=executor,
                                    timeout=timeout, pipeline=pipeline)

        return deco

    # -- pushing -----------------------------------------------------------------------------

    def attach_runtime(self, runtime: MessageSink) -> None:
        """Called by :class:`~rrjobs.Jobs` at start: pushes go to it in-process."""
        self._runtime = runtime

    def detach_runtime(self, runtime: MessageSink) -> None:
        """Called by :class:`~rrjobs.Jobs` at stop."""
        if self._runtime is runtime:
            self._runtime = None

    def bind(self, client: MessageSink | None) -> None:
        """Send this app's pushes through ``client`` (an :class:`~rrjobs.Client`)
        when no runtime runs the app in this process (a web process that
        imports the handlers' module to push their jobs). ``None`` unbinds."""
        self._client = client

    def sink(self, via: MessageSink | None = None) -> MessageSink:
        """Where a push goes: ``via`` when given, else the runtime running this
        app in this process, else the bound client."""
        sink = via or self._runtime or self._client
        if sink is None:
            raise RuntimeError(
                f"app {self.name!r} is not running in this process and no client is bound: "
                "push through an rrjobs.Client (via=client, or app.bind(client))")
        return sink

    def message(self, name: str | Handler, payload: Any = b"", *, pipeline: str | None = None,
                id: str | None = None, delay: float = 0.0, priority: int = 0,
                headers: HeadersIn | None = None, max_attempts: int | None = None,
                timeout: float | None = None, auto_ack: bool = False) -> Message:
        """The :class:`Message` :meth:`push` would send. A job name with a typed
        handler here has its payload validated against the handler's type and
        defaults to the handler's pipeline."""
        spec = name.spec if isinstance(name, Handler) else self._handlers.get(name)
        job_name = name.job_name if isinstance(name, Handler) else name
        return build_message(
            job_name, payload, pipeline=pipeline or (spec.pipeline if spec else None) or "",
            id=id, delay=delay, priority=priority, headers=headers, max_attempts=max_attempts,
            timeout=timeout, auto_ack=auto_ack, signature=spec.signature if spec else None)

    async def push(self, name: str | Handler, payload: Any = b"", *,
                   via: MessageSink | None = None, pipeline: str | None = None,
                   id: str | None = None, delay: float = 0.0, priority: int = 0,
                   headers: HeadersIn | None = None, max_attempts: int | None = None,
                   timeout: float | None = None, auto_ack: bool = False) -> str:  # noqa: ASYNC109 (the job's timeout)
        """Push one job; returns its id.

        Inside a handler, or anywhere in the process that runs this app
        (``rrjobs serve``, :func:`rrjobs.testing.run_app`), the job goes
        straight to the running runtime, with no RPC round trip. See
        :func:`~rrjobs.runtime.producer.build_message` for the arguments."""
        msg = self.message(name, payload, pipeline=pipeline, id=id, delay=delay,
                           priority=priority, headers=headers, max_attempts=max_attempts,
                           timeout=timeout, auto_ack=auto_ack)
        await self.sink(via).push(msg)
        return msg.id

    async def push_batch(self, msgs: Sequence[Message], *,
                         via: MessageSink | None = None) -> None:
        """Push messages built with :meth:`message` (or :meth:`Handler.message`)."""
        await self.sink(via).push_batch(msgs)

    def fallback(self, func: F | None = None, *, executor: Executor = "auto",
                 timeout: float | None = None) -> Any:
        """Decorator: the handler for jobs with no handler of their own."""

        def deco(f: F) -> F:
            self._fallback = self._spec("*", f, executor, timeout)
            return f

        return deco(func) if func is not None else deco

    def on_startup(self, func: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: a coroutine run after the runtime started."""
        self._startup.append(func)
        return func

    def on_shutdown(self, func: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: a coroutine run before the runtime stops."""
        self._shutdown.append(func)
        return func

    @property
    def startup_hooks(self) -> list[Callable[[], Awaitable[None]]]:
        return list(self._startup)

    @property
    def shutdown_hooks(self) -> list[Callable[[], Awaitable[None]]]:
        return list(self._shutdown)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def specs(self) -> list[HandlerSpec]:
        """The registered handlers, by job name (the fallback not included)."""
        return [self._handlers[n] for n in sorted(self._handlers)]

    @property
    def by_name(self) -> Mapping[str, HandlerSpec]:
        """The registered handlers by job name (a live, read-only view; the
        fallback is not in it)."""
        return self._handlers

    def resolve(self, job_name: str) -> HandlerSpec:
        """The handler for ``job_name``, else the fallback, else :class:`NoHandlerError`."""
        spec = self._handlers.get(job_name)
        if spec is not None:
            return spec
        if self._fallback is not None:
            return self._fallback
        raise NoHandlerError(f"no handler registered for job {job_name!r} and no fallback")

    def needs_processes(self) -> bool:
        specs = list(self._handlers.values())
        if self._fallback is not None:
            specs.append(self._fallback)
        return any(s.executor == "process" for s in specs)


class _ByName:
    """A module-level function that a process pool calls by its module and
    name, whatever object the module attribute now is (a :class:`Handler`
    wrapping it, after decoration)."""

    __slots__ = ("func", "module", "name")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.module = func.__module__
        self.name = func.__name__

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return _call_by_name, (self.module, self.name)


def _call_by_name(module: str, name: str) -> Callable[..., Any]:
    obj = getattr(importlib.import_module(module), name)
    return obj.func if isinstance(obj, Handler) else obj


def load_app(path: str) -> App:
    """Import ``module:attr`` (or ``module.attr``) and return the :class:`App` there.

    ``attr`` may also name a zero-argument factory returning an App.
    """
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"app path must look like 'module:attr', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App) and callable(obj):
        obj = obj()
    if not isinstance(obj, App):
        raise TypeError(f"{path} is a {type(obj).__name__}, not an rrjobs.App")
    return obj
