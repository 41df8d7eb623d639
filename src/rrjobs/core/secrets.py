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
  masking every ``"abc"`` in the logs would hide more than it protects. Nor are
  values that read as a word of ordinary text (:func:`is_word`: up to
  :data:`MAX_WORD` lowercase ASCII letters, such as ``guest`` or ``rrjobs``):
  masking them would hide module names, key paths and broker words wherever
  they stand, and make every error naming them look like a leak. They stay
  masked wherever their place says they are a credential (a URL's userinfo, a
  ``key=value`` pair of a credential key such as libpq's ``password=...``, a
  ``SecretStr`` field, a value of :data:`SECRET_KEYS`).
* :func:`redact_error`, at a driver's error boundary, gives rrjobs' own errors
  back as a scrubbed copy of their own type and turns foreign ones that show a
  credential into a :class:`RedactedError`.
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
    "MAX_WORD",
    "MIN_REMEMBERED",
    "SECRET_KEYS",
    "RedactedError",
    "SecretsFilter",
    "is_word",
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
#: The longest run of lowercase ASCII letters that :func:`remember` takes for a word of
#: ordinary text, not a secret to mask in free text (:func:`is_word`).
MAX_WORD = 11

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
_WORD = re.compile(rf"[a-z]{{1,{MAX_WORD}}}")
#: ``password=value`` in free text (a libpq keyword DSN, a query string, a client's
#: settings dump): the value is a credential whatever it reads as.
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|sasl_password|secret_key|secret|token)\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&'\"]+)")

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
    """``text`` with every URL's password, every ``password=...``-like pair's value
    and every remembered secret masked: for text rrjobs does not compose itself (a
    broker client's error message)."""
    text = redact_url(text) if "://" in text else text
    if "=" in text:
        text = _KEY_VALUE.sub(rf"\g<key>{MASK}", text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


# -- the remembered secrets -----------------------------------------------------------------


def is_word(value: str) -> bool:
    """Whether ``value`` reads as a word of ordinary text (``guest``, ``rrjobs``,
    ``postgres``: at most :data:`MAX_WORD` lowercase ASCII letters), which
    :func:`remember` does not mask in free text."""
    return _WORD.fullmatch(value) is not None


def remember(*values: str) -> None:
    """Mask ``values`` in everything :func:`scrub` (and so the log filter) sees from now
    on; values shorter than :data:`MIN_REMEMBERED` and words (:func:`is_word`) excepted."""
    global _pattern
    fresh = {v for v in values
             if isinstance(v, str) and len(v) >= MIN_REMEMBERED and not is_word(v)} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        ordered = sorted(_known, key=len, reverse=True)  # the longest match first
        # Whole values only: a secret inside a longer name (password "rr-2024", queue
        # "rr-2024-emails") is not that secret, and masking it hides the name.
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


def _scrubbed(value: Any) -> Any:
    """``value`` with :func:`scrub` applied to its strings, in tuples, lists and dicts;
    raises ``ValueError`` for another value whose ``repr`` shows a credential (an
    exception kept as an attribute)."""
    if isinstance(value, str):
        return scrub(value)
    if type(value) is tuple:
        return tuple(_scrubbed(item) for item in value)
    if type(value) is list:
        return [_scrubbed(item) for item in value]
    if type(value) is dict:
        return {key: _scrubbed(item) for key, item in value.items()}
    if value is None or type(value) in (bool, int, float):
        return value
    shown = repr(value)
    if scrub(shown) != shown:
        raise ValueError("an attribute shows a credential")
    return value


def _shows_secret(exc: BaseException) -> bool:
    return any(scrub(text) != text for text in (str(exc), repr(exc)))


def _scrubbed_copy(exc: RRJobsError) -> RRJobsError | None:
    """A copy of rrjobs' own ``exc``, of its type, with its arguments and attributes
    (a :class:`~rrjobs.core.errors.ConfigError`'s key path and problems, a note)
    scrubbed, and no traceback or causes; ``None`` when the copy cannot be made or
    still shows a credential (its text is not made of those strings)."""
    cls = type(exc)
    try:
        copy = cls.__new__(cls)  # not __init__: its parameters are the class's own
        copy.args = _scrubbed(exc.args)
        copy.__dict__.update(_scrubbed(dict(vars(exc))))
        shows = _shows_secret(copy)
    except Exception:
        return None
    return None if shows else copy


def redact_error(exc: BaseException) -> None:
    """For a driver's error boundary, where a broker client's exception leaves the
    driver: when ``exc`` or a chained cause shows a credential, raise a copy of
    ``exc`` without it and without the chained causes (which may carry the
    credential too): an rrjobs error (:class:`~rrjobs.core.errors.RRJobsError`)
    keeps its type, its message and its attributes scrubbed, so that a
    ``ConfigError`` is still one with its key path; any other exception becomes a
    :class:`RedactedError` with the masked ``Type: message`` of ``exc``. Return
    otherwise (the caller re-raises ``exc``)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if not any(_shows_secret(e) for e in chain):
        return
    copy = _scrubbed_copy(exc) if isinstance(exc, RRJobsError) else None
    if copy is not None:
        raise copy from None
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

