"""Validating driver and runtime options with pydantic, with exact key paths.

Drivers read their options through :func:`options_from_config` (a pipeline
from the config file) or :func:`options_from_pipeline` (a pipeline declared at
run time, where every value may be a string, as PHP clients send them). Both
raise :class:`~rrjobs.core.errors.ConfigError` naming the full key path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from rrjobs.core.errors import ConfigError

if TYPE_CHECKING:
    from rrjobs.core.interfaces import Configurer
    from rrjobs.core.pipeline import Pipeline

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors; a validation error never
    repeats the input (it may hold a credential)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


class DeclaredOptions(StrictModel):
    """Options a pipeline may also receive through ``Declare``, whose clients
    send every key as a string: an empty string (or null) means "not set", so
    the field keeps its default."""

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "" and v is not None}
        return data


# -- durations -------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a Go duration string (``1m30s``, ``500ms``)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("expected a duration, got an empty string")
    try:
        return float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r} (use seconds or e.g. '1m30s', '500ms')")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def _existing_file(path: str) -> str:
    if path and not os.path.isfile(path):
        raise ValueError(f"file {path!r} does not exist")
    return path


#: A path to a file that must exist when given (empty: none), as ``tls:`` checks its files.
ExistingFile = Annotated[str, AfterValidator(_existing_file)]


def or_default(default: Any) -> BeforeValidator:
    """A field validator for ``Annotated[...]``: a ``null`` or empty value reads as
    ``default`` (RoadRunner's Go zero values: ``addr: ""`` means the default)."""
    return BeforeValidator(lambda value: default if value in (None, "") else value)


def check_together(first: tuple[str, object], second: tuple[str, object], why: str) -> None:
    """Raise ``ValueError`` when only one of two settings that go together is set
    (each ``(key, value)``; a value is set when truthy), naming the missing one."""
    (first_key, first_value), (second_key, second_value) = first, second
    if bool(first_value) != bool(second_value):
        missing, given = (second_key, first_key) if first_value else (first_key, second_key)
        raise ValueError(f"{missing} is required when {given} is set ({why})")


# -- validation errors with key paths ---------------------------------------------------


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx.get('le')}"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def config_error(prefix: str, exc: ValidationError) -> ConfigError:
    """A :class:`ConfigError` with one ``(key path, message)`` per pydantic error."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        parts = [prefix] if prefix else []
        for loc in err.get("loc", ()):
            if isinstance(loc, int):
                parts[-1:] = [f"{parts[-1]}[{loc}]"] if parts else [f"[{loc}]"]
            else:
                parts.append(str(loc))
        problems.append((".".join(parts), _message(err)))
    path, message = problems[0]
    return ConfigError(path, message, problems)


def validate(model: type[M], data: Any, key: str) -> M:
    """Validate ``data`` with ``model``; errors name paths under ``key``."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise config_error(key, exc) from None




def comma_list(value: Any) -> Any:
    """A list from a list or from one comma-separated string (blank parts dropped),
    as RoadRunner reads ``brokers`` and ``topics``; a ``mode="before"`` field validator."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def json_map(value: Any) -> Any:
    """A mapping from a mapping or a JSON object string (``Declare``'s form for
    map-valued options); use as a ``mode="before"`` field validator."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"expected a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def options_from_config(configurer: Configurer, config_key: str, model: type[M]) -> M:
    """A driver's options for a config-file pipeline (``jobs.pipelines.<n>.config``)."""
    return configurer.unmarshal_key(config_key, model)


def options_from_pipeline(pipeline: Pipeline, model: type[M],
                          defaults: Mapping[str, Any] | None = None) -> M:
    """A driver's options for a declared pipeline; errors name ``declare.<name>.<key>``.
    ``defaults`` fill in the options the pipeline leaves out or sends empty."""
    values = pipeline.driver_options()
    for key, value in (defaults or {}).items():
        if values.get(key) in (None, ""):
            values[key] = value
    return validate(model, values, f"declare.{pipeline.name()}")
