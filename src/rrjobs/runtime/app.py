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

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from rrjobs.core.errors import NoHandlerError
from rrjobs.core.headers import Headers, attempts_of
from rrjobs.core.job import Job

Executor = Literal["auto", "async", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class JobData:
    """A picklable snapshot of a job, given to process-pool handlers."""

    id: str
    name: str
    payload: bytes
    headers: Headers
    pipeline: str
    priority: int

    @property
    def attempts(self) -> int:
        return attempts_of(self.headers)

    @classmethod
    def of(cls, job: Job) -> JobData:
        return cls(job.id, job.name, job.payload, job.headers, job.pipeline, job.priority)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: the function, where it runs, its timeout (None =
    the pool's ``exec_ttl``)."""

    name: str
    func: Callable[..., Any]
    executor: Literal["async", "thread", "process"]
    timeout: float | None = None


class App:
    """The registry of job handlers. Not thread-safe: register at import time."""

    def __init__(self, name: str = "rrjobs") -> None:
        self.name = name
        self._handlers: dict[str, HandlerSpec] = {}
        self._fallback: HandlerSpec | None = None
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self._shutdown: list[Callable[[], Awaitable[None]]] = []

    @staticmethod
    def _spec(name: str, func: Callable[..., Any], executor: Executor,
              timeout: float | None) -> HandlerSpec:
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
        return HandlerSpec(name, func, kind, timeout)

    def add_handler(self, name: str, func: Callable[..., Any], *, executor: Executor = "auto",
                    timeout: float | None = None) -> None:
        """Register ``func`` for jobs named ``name``. A name is registered once."""
        if name in self._handlers:
            raise ValueError(f"a handler for job {name!r} is already registered")
        self._handlers[name] = self._spec(name, func, executor, timeout)

    def handler(self, name: str | None = None, *, executor: Executor = "auto",
                timeout: float | None = None) -> Callable[[F], F]:
        """Decorator: register the function for job ``name`` (default: its ``__name__``)."""

        def deco(func: F) -> F:
            self.add_handler(name or func.__name__, func, executor=executor, timeout=timeout)
            return func

        return deco

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
