"""Checking a config's pipelines against their drivers, connecting to nothing.

For every pipeline of the file, :func:`check_pipelines` loads its driver
(a missing extra is one line with the ``pip install`` that fixes it), builds
the driver's constructor (which validates its global section, e.g. ``kafka:``)
and validates the pipeline's options with the driver's own model. It does so
through the hook every constructor already uses: ``driver_from_config`` reads
the options with ``configurer.unmarshal_key(config_key, Model)`` before it
opens anything; the configurer given here validates them there and then stops
the build. A constructor with a ``section()`` method (a section read lazily,
such as ``amqp:``) has it called too. Driver names never appear here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from pydantic import BaseModel

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError, DriverNotFoundError
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.registry import DriverRegistry, load_factory

log = logging.getLogger("rrjobs.preflight")

M = TypeVar("M", bound=BaseModel)

#: priority of a pipeline without ``config.priority`` (as the runtime)
DEFAULT_PRIORITY = 10
#: seconds a constructor may take to reach its options (it should not wait at all)
PROBE_TIMEOUT = 5.0

Problem = tuple[str, str]


class _OptionsRead(Exception):
    """Raised by the probe once the pipeline's options validated."""


class _Probe:
    """A :class:`~rrjobs.core.interfaces.Configurer` over the config that
    stops a driver's build right after reading ``stop_key``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_key = ""

    def has(self, key: str) -> bool:
        return self.config.has(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def unmarshal_key(self, key: str, model: type[M]) -> M:
        value = self.config.unmarshal_key(key, model)
        if key == self.stop_key:
            raise _OptionsRead
        return value


def _problems(exc: BaseException, where: str) -> list[Problem]:
    if isinstance(exc, ConfigError):
        return list(exc.problems)
    if isinstance(exc, DriverNotFoundError):
        return [(where, str(exc))]
    return [(where, f"{type(exc).__name__}: {exc}")]


async def check_pipelines(config: Config, registry: DriverRegistry | None = None
                          ) -> list[Problem]:
    """Every problem of the file's pipelines' drivers, as ``(key path, message)``."""
    registry = registry or DriverRegistry.from_entry_points()
    problems: list[Problem] = []
    constructors: dict[str, tuple[Any, _Probe] | None] = {}
    queue = PriorityQueue(1)
    for name, pcfg in config.jobs.pipelines.items():
        where = f"jobs.pipelines.{name}.driver"
        if pcfg.driver not in constructors:
            constructors[pcfg.driver] = _constructor(registry, pcfg.driver, config, where,
                                                     problems)
        built = constructors[pcfg.driver]
        if built is None:
            continue
        ctor, probe = built
        key = probe.stop_key = f"jobs.pipelines.{name}.config"
        pipe = Pipeline(name=name, driver=pcfg.driver,
                        priority=pcfg.config.get("priority", DEFAULT_PRIORITY),
                        config=dict(pcfg.config), created_with_config=key)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                driver = await ctor.driver_from_config(key, queue, pipe)
        except _OptionsRead:
            continue
        except Exception as exc:  # every problem is reported, whatever its kind
            problems.extend(_problems(exc, key))
            continue
        # the constructor did not read its options through unmarshal_key: it
        # built (and possibly opened) a driver; close it again
        log.warning("%s: the %s driver does not read its options through "
                    "configurer.unmarshal_key; they were checked by opening it", key, pcfg.driver)
        await driver.stop()
    return problems


def _constructor(registry: DriverRegistry, driver: str, config: Config, where: str,
                 problems: list[Problem]) -> tuple[Any, _Probe] | None:
    entry = registry.entry(driver)
    if entry is None:
        problems.append((where, registry.unknown(driver)))
        return None
    probe = _Probe(config)
    try:
        ctor = load_factory(entry)(probe)
        section = getattr(ctor, "section", None)
        if callable(section):
            section()
    except Exception as exc:  # every problem is reported, whatever its kind
        problems.extend(_problems(exc, where))
        return None
    return ctor, probe


def check_pipelines_sync(config: Config, registry: DriverRegistry | None = None
                         ) -> list[Problem]:
    """:func:`check_pipelines` from synchronous code (no loop running)."""
    return asyncio.run(check_pipelines(config, registry))
