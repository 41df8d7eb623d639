"""The pydantic field types of credentials (see :mod:`rrjobs.core.secrets` for
where they are masked)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr

from rrjobs.core.secrets import redact_url, remember, secret_values


class URLSecret(SecretStr):
    """A URL that may carry credentials in its userinfo; shown redacted (:func:`redact_url`)."""

    holds_url: ClassVar[bool] = True

    def _display(self) -> str:
        return redact_url(self.get_secret_value())


def _as_text(value: Any) -> Any:
    """A number (``password: 123456`` in YAML) reads as its text, as RoadRunner does."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _remembered(value: SecretStr) -> SecretStr:
    remember(*secret_values(value))
    return value


#: A credential field: validated from a string (or number), shown as ``**********``.
Secret = Annotated[SecretStr, BeforeValidator(_as_text), AfterValidator(_remembered)]
#: A URL field that may carry credentials: shown as ``scheme://user:***@host``.
SecretURL = Annotated[URLSecret, AfterValidator(_remembered)]



def url_scheme(url: str, allowed: Collection[str], expected: str) -> str:
    """The scheme of ``url``, lower case; a ``ValueError`` saying ``addr`` must be
    ``expected`` (the URL shown with its credentials masked) when it is none of ``allowed``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in allowed:
        raise ValueError(f"addr must be {expected}, got {redact_url(url)!r}")
    return scheme


__all__ = ["Secret", "SecretURL", "URLSecret", "url_scheme"]
