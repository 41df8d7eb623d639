"""``DriverConstructor``: the one constructor every driver uses.

A driver is a :class:`~rrjobs.core.base.BaseDriver` subclass built as
``driver_class(pipeline, queue, options, section)`` and opened with
``await driver.open(where)`` (connect and declare what the pipeline needs;
``where`` is the key path of the pipeline's options, for errors). Its
constructor only names the pieces::

    class SQSConstructor(DriverConstructor):
        driver_class = SQSDriver            # its ``name`` is the constructor's
        options_model = SQSOptions          # the pipeline's options
        section_model = SQSSection          # the global section (key: the name), if any

``declared_capabilities`` is the driver class's ``declared(options)``
(:meth:`BaseDriver.declared`: its class's capabilities unless it narrows them
by option), read before any pipeline opens.

This class validates the global section once, when it is created (a bad
value fails with its key path; a required section that is absent fails when
the first pipeline is built), validates each pipeline's options
with exact key paths (from the config file or from ``Declare``), fills in
the pipeline priority from the options (and, for a declared pipeline, the
``declare_defaults`` it leaves out), refuses options whose ``problems()`` (a
method an options model may have) lists settings that cannot work together,
opens the driver, and closes it
again when opening fails, so that a driver that could not start leaves no
connection behind; an error of ``open`` that shows a credential is raised again
without it (``redact_error``): one of rrjobs' own errors as a scrubbed copy of its
own type (a ``ConfigError`` keeps its key path), a client library's as a
:class:`~rrjobs.core.secrets.RedactedError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import ConfigError
from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.options import options_from_config, options_from_pipeline
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import redact_error

log = logging.getLogger("rrjobs.drivers")


class DriverConstructor(Constructor):
    """Builds drivers of one kind from their options model and global section."""

    #: The driver class: ``driver_class(pipeline, queue, options, section)``, a
    #: :class:`BaseDriver` with ``async open(where)``. Its ``name`` is the
    #: constructor's unless the constructor names itself.
    driver_class: ClassVar[Callable[..., Any]]
    #: The pydantic model of a pipeline's options.
    options_model: ClassVar[type[BaseModel]]
    #: The global section's model (``None``: no section); an absent section gives
    #: its defaults unless ``section_required``.
    section_model: ClassVar[type[BaseModel] | None] = None
    #: The key of the global section; ``None``: the driver's name.
    section_key: ClassVar[str | None] = None
    section_required: ClassVar[bool] = False
    #: Options a pipeline declared at run time (``Declare``) gets when it leaves
    #: them out or sends them empty, where they differ from the config file's.
    declare_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        driver = cls.__dict__.get("driver_class")
        if driver is not None and "name" not in cls.__dict__:
            cls.name = getattr(driver, "name", "")

    def __init__(self, configurer: Configurer) -> None:
        super().__init__(configurer)
        self._section: Any = None
        key, model = self._section_key, self.section_model
        if model is not None and configurer.has(key):
            self._section = configurer.unmarshal_key(key, model)  # bad values fail now

    @property
    def _section_key(self) -> str:
        return self.section_key or self.name

    @property
    def section(self) -> Any:
        """The global section, validated on first use (``None`` without a model)."""
        key, model = self._section_key, self.section_model
        if self._section is None and model is not None:
            if self.configurer.has(key):
                self._section = self.configurer.unmarshal_key(key, model)
            elif self.section_required:
                raise ConfigError(key, f"the {self.name} driver needs the global {key} "
                                  "section")
            else:
                self._section = model()
        return self._section

    def declared_capabilities(self, source: str | Pipeline) -> Capabilities:
        if isinstance(source, str):
            options = options_from_config(self.configurer, source, self.options_model)
        else:
            options = options_from_pipeline(source, self.options_model, self.declare_defaults)
        declared: Callable[[BaseModel], Capabilities] | None = getattr(
            self.driver_class, "declared", None)
        return declared(options) if declared is not None else Capabilities()

    async def driver_from_config(self, config_key: str, queue: PriorityQueue,
                                 pipeline: Pipeline) -> BaseDriver:
        options = options_from_config(self.configurer, config_key, self.options_model)
        return await self._open(pipeline, queue, options, config_key)

    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue) -> BaseDriver:
        options = options_from_pipeline(pipeline, self.options_model, self.declare_defaults)
        return await self._open(pipeline, queue, options, f"declare.{pipeline.name()}")

    async def _open(self, pipeline: Pipeline, queue: PriorityQueue, options: BaseModel,
                    where: str) -> BaseDriver:
        check_problems(options, where)
        priority = getattr(options, "priority", None)
        if isinstance(priority, int) and priority:
            pipeline.setdefault("priority", priority)
        driver: BaseDriver = self.driver_class(pipeline, queue, options, self.section)
        try:
            await driver.open(where)  # type: ignore[attr-defined]
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await driver.stop()
            if isinstance(exc, Exception):  # a client's text may show addr, password included
                redact_error(exc)
            raise
        return driver


def check_problems(options: BaseModel, where: str) -> None:
    """Raise :class:`ConfigError` listing every ``(key, message)`` of the options'
    ``problems()`` (settings well-formed but unusable together, keys under ``where``),
    for an options model that has that method."""
    problems = getattr(options, "problems", None)
    listed = [(f"{where}.{key}", message) for key, message in problems()] if problems else []
    if listed:
        raise ConfigError(listed[0][0], listed[0][1], listed)
