"""mkdocs hooks of the rrjobs documentation site.

The configuration reference (``docs/reference/config.md``) is generated at
build time from the pydantic models that validate the configuration — the
runtime's (:mod:`rrjobs.config`) and every driver's (``rrjobs.drivers.*.config``)
— so it cannot drift from the code: a page holding the marker
``<!-- rrjobs:config-reference -->`` gets the tables in its place.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo

MARKER = "<!-- rrjobs:config-reference -->"

_ATTRIBUTE = re.compile(r"^(\s+)(\w+)(?: \([^)]*\))?: (.*)$")


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of the model's
    docstring (Google style, continuation lines joined)."""
    doc = inspect.getdoc(model) or ""
    out: dict[str, str] = {}
    inside = False
    current: str | None = None
    indent = ""
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside, current = True, None
            continue
        if not inside:
            continue
        if not line.strip():
            current = None
            continue
        if not line.startswith(" "):
            inside = False
            continue
        m = _ATTRIBUTE.match(line)
        if m and (current is None or len(m.group(1)) <= len(indent)):
            indent, current = m.group(1), m.group(2)
            out[current] = m.group(3).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def _is_duration(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and getattr(m.func, "__name__", "")
               == "parse_duration" for m in metadata)


def type_name(tp: Any, metadata: list[Any] | None = None) -> str:
    """A short, readable name of an annotation (``duration`` for rrjobs durations)."""
    if metadata and _is_duration(metadata):
        return "duration"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0], list(args[1:]))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {type_name(args[1])}" if len(args) == 2 else "map"
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return "section"
    if inspect.isclass(tp) and issubclass(tp, SecretStr):
        return "str (secret)"
    return getattr(tp, "__name__", str(tp))


def constraints(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for cls, attr, sign in ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
                                (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<")):
            if isinstance(m, cls):
                parts.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            parts.append("not empty" if m.min_length == 1 else f"length ≥ {m.min_length}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "computed"
        if isinstance(value, BaseModel):
            return "(section)"
        if isinstance(value, dict | list) and not value:
            return f"`{value!r}`"
        return "computed at load"
    value = field.default
    if isinstance(value, SecretStr):  # a default is public: the documented value
        value = value.get_secret_value()
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    return f"`{value!r}`"


def _models_in(tp: Any) -> list[tuple[str, type[BaseModel]]]:
    """``("", Model)`` for a model annotation (optional included), ``(".<name>", Model)``
    for a map of models."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return [("", tp)]
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    if origin is dict and len(args) == 2:
        return [(".<name>", m) for _, m in _models_in(args[1])]
    return []


def rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` for every key of ``model``, nested
    sections flattened into dotted keys."""
    docs = attribute_docs(model)
    out: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        text = (field.description or docs.get(name) or docs.get(key) or "").replace("``", "`")
        limit = constraints(field)
        if limit:
            text = f"{text} ({limit})" if text else limit
        out.append((path, type_name(field.annotation, list(field.metadata)),
                    default_text(field), text))
        for suffix, sub in _models_in(field.annotation):
            if sub is not model:
                out.extend(rows(sub, path + suffix))
    return out


def table(model: type[BaseModel], prefix: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tp, default, text in rows(model, prefix):
        lines.append(f"| `{cell(key)}` | {cell(tp)} | {cell(default)} | {cell(text)} |")
    return "\n".join(lines)


def _summary(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("``", "`").strip()


_SECTION = re.compile(r"``(\w+):``")


def _prefix(model: type[BaseModel]) -> str:
    """Where a driver model's keys live: a pipeline's ``config`` for options,
    the top-level section its docstring names for a section."""
    if model.__name__.endswith("Options"):
        return "jobs.pipelines.<name>.config"
    m = _SECTION.search(inspect.getdoc(model) or "")
    return m.group(1) if m else ""


def driver_models() -> list[tuple[str, list[type[BaseModel]]]]:
    """Per driver package: its root config models (those no other model of
    the module contains), in source order."""
    import rrjobs.drivers

    out = []
    for info in sorted(pkgutil.iter_modules(rrjobs.drivers.__path__), key=lambda i: i.name):
        try:
            module = importlib.import_module(f"rrjobs.drivers.{info.name}.config")
        except ModuleNotFoundError:
            continue
        models = [obj for obj in vars(module).values()
                  if inspect.isclass(obj) and issubclass(obj, BaseModel)
                  and obj.__module__ == module.__name__]
        contained = {sub for m in models for f in m.model_fields.values()
                     for _, sub in _models_in(f.annotation)}
        roots = [m for m in models if m not in contained]
        roots.sort(key=lambda m: inspect.getsourcelines(m)[1])
        out.append((info.name, roots))
    return out


def config_reference() -> str:
    """The whole generated reference, as Markdown."""
    from rrjobs.config import DashboardConfig, JobsConfig, MetricsConfig, RPCConfig

    parts = ["## The `jobs:` section", "", _summary(JobsConfig), "", table(JobsConfig, "jobs"),
             "", "## `rpc:`", "", _summary(RPCConfig), "", table(RPCConfig, "rpc"), "",
             "## `metrics:`", "", _summary(MetricsConfig), "", table(MetricsConfig, "metrics"),
             "", "## `dashboard:`", "", _summary(DashboardConfig), "",
             table(DashboardConfig, "dashboard"), "", "## Driver options", "",
             "Keys under `jobs.pipelines.<name>.config` (and driver sections at the top "
             "level), per driver. Each driver's page explains them.", ""]
    for driver, models in driver_models():
        parts += [f"### `{driver}`", ""]
        for model in models:
            parts += [f"**{model.__name__}**: {_summary(model)}", "",
                      table(model, _prefix(model)), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, config_reference())
    return markdown
