"""``Pipeline``: a pipeline's options with RoadRunner's typed getters.

A pipeline is a plain mapping. For a pipeline from the config file it holds
``name``, ``driver``, ``priority`` and the nested ``config`` mapping; for a
pipeline declared at run time it holds the flat string map sent to
``Declare``. Every getter looks at the top-level key first and then inside
``config`` (RoadRunner's ``resolve()``), so drivers read both forms the same
way.
"""

from __future__ import annotations

import json
from typing import Any

from rrjobs.core.secrets import redact_options

DEFAULT_PRIORITY = 10

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class Pipeline(dict[str, Any]):
    """A pipeline's options. Not concurrency-sensitive: drivers read it. Its
    ``repr``/``str`` mask credentials (:func:`~rrjobs.core.secrets.redact_options`)."""

    def __repr__(self) -> str:
        return f"Pipeline({redact_options(self)!r})"

    __str__ = __repr__

    def with_value(self, name: str, value: Any) -> Pipeline:
        """Set ``name`` to ``value`` and return ``self`` (RoadRunner's ``With``)."""
        self[name] = value
        return self

    def name(self) -> str:
        """The pipeline name (``name``, falling back to ``queue`` as RoadRunner does)."""
        return str(self.get("name") or self.get("queue") or "")

    def driver(self) -> str:
        return str(self.get("driver") or "")

    def _resolve(self, key: str) -> tuple[bool, Any]:
        if key in self:
            return True, self[key]
        cfg = self.get("config")
        if isinstance(cfg, dict) and key in cfg:
            return True, cfg[key]
        return False, None

    def has(self, key: str) -> bool:
        return self._resolve(key)[0]

    def get_value(self, key: str, default: Any = None) -> Any:
        found, value = self._resolve(key)
        return value if found else default

    def get_str(self, key: str, default: str = "") -> str:
        """A string; an empty string gives ``default`` (as RoadRunner)."""
        found, value = self._resolve(key)
        if not found or value is None or value == "":
            return default
        return str(value)

    def get_int(self, key: str, default: int = 0) -> int:
        """An int from an int, a float or a numeric string.

        Raises ``ValueError`` naming the key for anything else, rather than
        silently using the default.
        """
        found, value = self._resolve(key)
        if not found or value is None or value == "":
            return default
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            try:
                return int(float(str(value).strip()))
            except ValueError:
                raise ValueError(f"{key}: expected an integer, got {value!r}") from None

    def get_float(self, key: str, default: float = 0.0) -> float:
        found, value = self._resolve(key)
        if not found or value is None or value == "":
            return default
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got a boolean")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None

    def get_bool(self, key: str, default: bool = False) -> bool:
        """A boolean from a bool or the strings true/false (also 1/0, yes/no, on/off).

        RoadRunner parses only the strings ``"true"``/``"false"`` and gives the
        default for a native bool; rrjobs accepts both and raises
        ``ValueError`` for anything it cannot read.
        """
        found, value = self._resolve(key)
        if not found or value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return default if text == "" else False
        raise ValueError(f"{key}: expected true or false, got {value!r}")

    def get_map(self, key: str) -> dict[str, Any]:
        """A mapping, JSON-decoded when the value is a string (Declare's form)."""
        found, value = self._resolve(key)
        if not found or value is None or value == "":
            return {}
        if isinstance(value, dict):
            return dict(value)
        try:
            decoded = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{key}: expected a JSON object: {exc}") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"{key}: expected a JSON object, got {type(decoded).__name__}")
        return decoded

    def priority(self) -> int:
        """The pipeline priority (default 10)."""
        return self.get_int("priority", DEFAULT_PRIORITY)

    def driver_options(self) -> dict[str, Any]:
        """The driver's own options: the nested ``config`` mapping for a config
        pipeline, or every key except the runtime's for a declared one."""
        cfg = self.get("config")
        if isinstance(cfg, dict):
            return dict(cfg)
        return {k: v for k, v in self.items() if k not in RUNTIME_KEYS}


#: Keys of a pipeline that belong to the runtime, not to the driver.
RUNTIME_KEYS = frozenset(
    {
        "name",
        "driver",
        "config",
        "retry",
        "pool",
        "created_with_config",
        "created_with_declare",
        "consume_all",
    }
)
