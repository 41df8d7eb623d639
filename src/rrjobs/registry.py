"""Driver discovery through the ``rrjobs.drivers`` entry-point group.

Built-in drivers register exactly as third-party ones do, in their
distribution's metadata::

    [project.entry-points."rrjobs.drivers"]
    my_awesome_driver = "my_awesome_driver:Constructor"

Entry points are loaded lazily: a driver's module (and its broker client) is
imported only when a pipeline uses it, so ``import rrjobs`` imports no broker
client.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, entry_points

from rrjobs.core.errors import DriverNotFoundError, DuplicateDriverError
from rrjobs.core.interfaces import Configurer, Constructor

GROUP = "rrjobs.drivers"

ConstructorFactory = Callable[[Configurer], Constructor]


@dataclass(frozen=True)
class DriverEntry:
    """One registered driver: its name, where it comes from, how to load it."""

    name: str
    source: str
    target: str
    loader: Callable[[], ConstructorFactory]
    dist: Distribution | None = None


class DriverNotInstalledError(DriverNotFoundError):
    """A driver is registered but a module it imports is missing (its extra
    is not installed). The message names the ``pip install`` that fixes it."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_REQ_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def extra_providing(dist: Distribution, module: str) -> str | None:
    """The extra of ``dist`` whose requirements provide ``module`` (matched by
    normalised name: ``aio_pika`` → ``aio-pika``, ``nats`` → ``nats-py``,
    ``google.cloud`` → ``google-cloud-pubsub``); the smallest such extra."""
    mod = _norm(module)
    by_extra: dict[str, list[str]] = {}
    for req in dist.requires or []:
        name, extra = _REQ_NAME.match(req), _REQ_EXTRA.search(req)
        if name is not None and extra is not None:
            by_extra.setdefault(extra.group(1), []).append(_norm(name.group(1)))
    matching = [
        (len(names), extra) for extra, names in by_extra.items()
        if any(n == mod or n.startswith(mod + "-") or mod.startswith(n + "-") for n in names)
    ]
    return min(matching)[1] if matching else None


def load_factory(entry: DriverEntry) -> ConstructorFactory:
    """Import a driver's entry point. A missing module becomes a
    :class:`DriverNotInstalledError` naming the extra to install."""
    try:
        return entry.loader()
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if missing == entry.target.partition(":")[0] or entry.dist is None:
            raise DriverNotInstalledError(
                f"the {entry.name} driver cannot be imported from {entry.source}: {exc}") from None
        extra = extra_providing(entry.dist, missing)
        fix = (f"pip install '{entry.dist.name}[{extra}]'" if extra is not None
               else f"install the Python module {missing!r}")
        raise DriverNotInstalledError(
            f"the {entry.name} driver needs {missing}, which is not installed: {fix}") from None


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "<unknown distribution>"


class DriverRegistry:
    """The drivers available to a runtime, by name. Not thread-safe; build it
    once at start-up."""

    def __init__(self, entries: Iterable[DriverEntry] = ()) -> None:
        self._entries: dict[str, DriverEntry] = {}
        for entry in entries:
            self._add(entry)

    def _add(self, entry: DriverEntry) -> None:
        old = self._entries.get(entry.name)
        if old is not None:
            if (old.source, old.target) == (entry.source, entry.target):
                return  # the same distribution seen twice on sys.path
            raise DuplicateDriverError(
                f"driver name {entry.name!r} is registered twice: by {old.source} "
                f"({old.target}) and by {entry.source} ({entry.target})"
            )
        self._entries[entry.name] = entry

    @classmethod
    def from_entry_points(cls, group: str = GROUP) -> DriverRegistry:
        """Every driver registered in installed distributions' metadata."""
        entries = [
            DriverEntry(ep.name, _dist_name(ep), ep.value, ep.load, getattr(ep, "dist", None))
            for ep in entry_points(group=group)
        ]
        return cls(entries)

    def register(self, name: str, factory: ConstructorFactory, source: str = "<code>") -> None:
        """Register a constructor from code (tests, embedding applications)."""
        target = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"
        self._add(DriverEntry(name, source, target, lambda: factory))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def unknown(self, name: str) -> str:
        """Why no driver ``name`` is found: it is unknown, with the closest installed
        one (rrjobs has a driver for each of RoadRunner's eight)."""
        available = ", ".join(self.names()) or "none"
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown driver {name!r}{hint}; available drivers: {available}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def source(self, name: str) -> str:
        return self._entries[name].source

    def entry(self, name: str) -> DriverEntry | None:
        return self._entries.get(name)

    def constructor(self, name: str, configurer: Configurer, *, where: str = "") -> Constructor:
        """Load driver ``name`` and build its constructor.

        Raises :class:`DriverNotFoundError` listing the available drivers.
        """
        entry = self._entries.get(name)
        if entry is None:
            prefix = f"{where}: " if where else ""
            raise DriverNotFoundError(f"{prefix}{self.unknown(name)}")
        try:
            factory = load_factory(entry)
        except DriverNotInstalledError as exc:
            prefix = f"{where}: " if where else ""
            raise DriverNotInstalledError(f"{prefix}{exc}") from None
        constructor = factory(configurer)
        if not isinstance(constructor, Constructor):
            raise TypeError(
                f"entry point {entry.target} of {entry.source} did not produce a Constructor"
            )
        return constructor
