"""Credentials: how config models hold them and how text is kept free of them.

* :data:`Secret` and :data:`SecretURL` are the field types of every credential in
  a config model (pydantic ``SecretStr``): a plain string (or number) in YAML or
  ``Declare`` still works, ``repr``/``str``/``model_dump`` show ``**********`` or
  the URL with its password masked (``amqp://user:***@host``), and the driver
  reads the real value with ``get_secret_value()`` when it connects.
* :func:`redact_url`, :func:`redact_options` and :func:`scrub` render a URL, a
  raw option set or any text (a broker client's error message) without the
  credentials in it. Every place that shows a URL, a pipeline's options or a
  client library's error text goes through them.
* Every secret a model validates is remembered (:func:`remember`), as are the
  ones :func:`remember_tree` finds in a raw config; :func:`scrub` masks them
  wherever they appear, and :class:`SecretsFilter` (installed on the handlers of
  rrjobs' logging setup) applies it to every log record as defense in depth.
  Values shorter than :data:`MIN_REMEMBERED` characters are not remembered:
  masking every ``"abc"`` in the logs would hide more than it protects.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from rrjobs.core.errors import RRJobsError

__all__ = [
    "MASK",
    "MIN_REMEMBERED",
    "SECRET_KEYS",
    "RedactedError",
    "SecretsFilter",
    "redact_error",
    "redact_options",
    "redact_url",
    "remember",
    "remember_tree",
    "scrub",
    "secret_values",
]

#: What a secret is replaced with.
MASK = "***"
#: The shortest value :func:`remember` keeps for :func:`scrub`.
MIN_REMEMBERED = 4

#: Option keys (any case) whose values are credentials wherever they appear in
#: a raw option set: RoadRunner's and the brokers' names for them.
SECRET_KEYS = frozenset({
    "password", "pass", "passwd", "secret", "secret_key", "session_token", "token",
    "access_key", "credentials", "creds", "nkey", "api_key", "sasl_password",
})

#: ``scheme://userinfo@`` in free text: the userinfo runs to the authority's last
#: ``@`` (a password may hold an unencoded one), never past ``/?#``, whitespace or
#: a quote.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


# -- rendering ------------------------------------------------------------------------------


def _masked_userinfo(userinfo: str) -> str:
    """``user:***`` for ``user:password``; ``***`` for a lone user part, which some
    brokers (NATS) read as a token."""
    user, sep, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if sep else MASK


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo masked (``amqp://user:***@host/vhost``;
    a lone user part, which NATS reads as a token, becomes ``***``). A comma-separated
    list of URLs is redacted URL by URL; text without userinfo comes back unchanged."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{_masked_userinfo(m['userinfo'])}@"
                             if m["userinfo"] else m[0], url)


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_secret_str(value: Any) -> bool:
    """A pydantic ``SecretStr`` (duck-typed: this module imports no pydantic, so
    that the CLI's client commands load without it)."""
    return callable(getattr(value, "get_secret_value", None))


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a raw option set fit to show: values of :data:`SECRET_KEYS` masked,
    URLs redacted, ``SecretStr`` values shown masked, nested mappings and JSON
    objects (``Declare``'s form of nested options) redacted the same way."""
    return {key: _redact_value(key, value) for key, value in options.items()}


def _redact_value(key: Any, value: Any) -> Any:
    if _is_secret_str(value):
        return str(value)
    if _is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return redact_options(value)
    if isinstance(value, list | tuple):
        return [_redact_value(None, item) for item in value]
    if isinstance(value, str):
        nested = _json_object(value)
        if nested is not None:
            return json.dumps(redact_options(nested), separators=(",", ":"))
        return scrub(value)
    return value


def scrub(text: str) -> str:
    """``text`` with every URL's password and every remembered secret masked: for
    text rrjobs does not compose itself (a broker client's error message)."""
    text = redact_url(text) if "://" in text else text
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


# -- the remembered secrets -----------------------------------------------------------------


def remember(*values: str) -> None:
    """Mask ``values`` in everything :func:`scrub` (and so the log filter) sees from now on."""
    global _pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_REMEMBERED} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        ordered = sorted(_known, key=len, reverse=True)  # the longest match first
        # Whole values only: a secret inside a longer name (password "rrjobs", queue
        # "rrjobs-emails") is not that secret, and masking it hides the name.
        _pattern = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, ordered))
                              + r")(?![\w-])")


def _url_secrets(text: str) -> Iterator[str]:
    for m in _URL_USERINFO.finditer(text):
        user, sep, password = m["userinfo"].partition(":")
        secret = password if sep else user
        if secret:
            yield secret


def secret_values(tree: Any) -> list[str]:
    """The credentials in a raw config tree (or a model): values of
    :data:`SECRET_KEYS`, ``SecretStr`` values and the passwords (or tokens) of URLs,
    in nested mappings, lists and JSON object strings."""
    found: list[str] = []

    def walk(key: Any, value: Any) -> None:
        if _is_secret_str(value):
            secret = value.get_secret_value()
            found.extend(_url_secrets(secret) if getattr(value, "holds_url", False)
                         else [secret])
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(k, v)
        elif hasattr(value, "model_fields") and not isinstance(value, type):
            for name in type(value).model_fields:
                walk(name, getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(None, item)
        elif isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value)
            if _is_secret_key(key):
                found.append(text)
            elif isinstance(value, str):
                nested = _json_object(text)
                if nested is not None:
                    walk(None, nested)
                elif "://" in text:
                    found.extend(_url_secrets(text))

    walk(None, tree)
    return [value for value in found if value]


def remember_tree(tree: Any) -> None:
    """:func:`remember` every credential :func:`secret_values` finds in ``tree``."""
    remember(*secret_values(tree))


class RedactedError(RRJobsError):
    """A broker client's error whose text carried a credential, with the text masked
    (``type`` names the original's class)."""


def redact_error(exc: BaseException) -> None:
    """For a driver's error boundary, where a broker client's exception leaves the
    driver: raise a :class:`RedactedError` with the masked ``Type: message`` of
    ``exc`` (and no chained causes, which may carry the credential too) when ``exc``
    or a cause shows a credential; return otherwise (the caller re-raises ``exc``)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(scrub(text) != text for e in chain for text in (str(e), repr(e))):
        raise RedactedError(scrub(f"{type(exc).__name__}: {exc}")) from None


# -- logging --------------------------------------------------------------------------------


class SecretsFilter(logging.Filter):
    """Masks URL passwords and remembered secrets in a record's message, its
    traceback and its string ``extra`` values (the record is changed in place,
    so every handler after this one sees the scrubbed text)."""

    _formatter = logging.Formatter()
    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in self._STANDARD:
                setattr(record, key, scrub(value))
        return True

