"""Reading a ``.rr.yaml`` into a plain tree, before any validation.

YAML is parsed and ``${VAR}`` / ``${VAR:-default}`` expanded in every string
value, as RoadRunner does (``$$`` is a literal ``$``). No pydantic here: the
RPC commands of the CLI read ``rpc.listen`` and ``rpc.token`` through
:func:`client_settings` without loading the configuration models, and
:class:`rrjobs.config.Config` validates the same tree for the server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rrjobs.core.errors import ConfigError

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariableError(ValueError):
    """``${VAR}`` names a variable that is not set and gives no default."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} is not set "
                         f"(write ${{{name}:-}} for an empty default)")


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``; ``$$`` is ``$``.

    An unset or empty ``VAR`` takes the default; an unset one without a
    default raises :class:`UnsetVariableError` (a set but empty one is empty)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got is None and default is None:
            raise UnsetVariableError(name)
        if got is None or (got == "" and default is not None):
            return default or ""
        return got

    return _ENV.sub(sub, value)


def expand_tree(node: Any, env: Mapping[str, str], path: str,
                problems: list[tuple[str, str]]) -> Any:
    """``node`` with every string expanded; an unset variable is added to ``problems``
    as ``(key path, message)`` and its string kept as written."""
    if isinstance(node, str):
        try:
            return expand_env(node, env)
        except UnsetVariableError as exc:
            problems.append((path, str(exc)))
            return node
    if isinstance(node, dict):
        return {k: expand_tree(v, env, f"{path}.{k}" if path else str(k), problems)
                for k, v in node.items()}
    if isinstance(node, list):
        return [expand_tree(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    return node


def parse(text: str, *, env: Mapping[str, str] | None = None,
          source: str = "<string>") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The expanded top-level mapping of ``text`` and the unset variables found.

    Raises :class:`ConfigError` for invalid YAML or a top level that is not a mapping."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{source}: invalid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"{source}: the top level must be a mapping")
    problems: list[tuple[str, str]] = []
    return expand_tree(raw, os.environ if env is None else env, "", problems), problems


def read(path: str | Path) -> str:
    """The text of the config file ``path``; :class:`ConfigError` when it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config {p}: {exc.strerror}") from None


def client_settings(path: str | Path) -> tuple[str, str] | None:
    """``(rpc.listen, rpc.token)`` of the file, as strings (either may be ``""``: not
    set), when the ``rpc`` section holds nothing else and reads without the models;
    ``None`` otherwise (any other key, even a valid one, a typo, a wrong type, an unset
    variable), so that the caller validates the file and reports the exact key path."""
    tree, problems = parse(read(path), source=str(path))
    rpc = tree.get("rpc", {})
    if (not isinstance(rpc, dict) or set(rpc) - {"listen", "token"}
            or any(p == "rpc" or p.startswith("rpc.") for p, _ in problems)):
        return None
    listen, token = rpc.get("listen", ""), rpc.get("token", "")
    if not isinstance(listen, str) or not isinstance(token, str):
        return None
    return listen, token


def has_schedules(path: str | Path) -> bool:
    """Whether the file gives ``jobs.schedules`` (an unreadable file counts as one:
    the caller's validation then reports it)."""
    try:
        tree, _ = parse(read(path), source=str(path))
    except ConfigError:
        return True
    jobs = tree.get("jobs")
    return not isinstance(jobs, dict) or bool(jobs.get("schedules"))
