"""Bearer tokens: the one check every token-protected HTTP endpoint of rrjobs
makes (the dashboard's API and event stream).

The token travels in an ``Authorization: Bearer <token>`` header only, never
in a URL (URLs end up in logs and browser history); it is compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac

__all__ = ["bearer_token", "token_ok"]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header value ``Bearer <token>``
    (the scheme is case-insensitive), else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_ok(authorization: str | None, expected: str | None) -> bool:
    """Whether a request with this ``Authorization`` header value may pass:
    always when no token is ``expected``; otherwise only with ``Bearer
    <expected>``."""
    if not expected:
        return True
    given = bearer_token(authorization)
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
