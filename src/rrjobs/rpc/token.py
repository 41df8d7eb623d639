"""The RPC's bearer token, as both sides read it (no aiohttp import: the CLI's
calls load this without the server)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from rrjobs.core.secrets import remember

#: The environment variable holding the token (``rpc.token`` in the config).
TOKEN_ENV = "RRJOBS_RPC_TOKEN"


def resolve_token(given: str | None = None, configured: str | None = None,
                  env: Mapping[str, str] | None = None) -> str | None:
    """The token to use: ``given`` (an explicit argument), else the
    :data:`TOKEN_ENV` variable, else ``configured`` (``rpc.token``). An empty
    value means none. The token is remembered for masking (:mod:`rrjobs.core.secrets`)."""
    for value in (given, (os.environ if env is None else env).get(TOKEN_ENV), configured):
        if value:
            remember(value)
            return value
    return None


def bearer_header(token: str) -> dict[str, str]:
    """The request header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}
