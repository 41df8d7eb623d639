"""NATS decentralised auth for the ``nats-creds`` test broker: an operator, a system
account and an application account with JetStream, and a user whose ``.creds`` file
(user JWT and nkey seed) is what a client presents.

The keys are Ed25519 nkeys (``nkeys``, the package nats-py signs with); the JWTs are
NATS' v2 claims, signed ``ed25519-nkey`` as ``nsc`` makes them. The server takes them
with ``resolver: MEMORY`` and ``resolver_preload`` (no account server).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped,unused-ignore]

#: No limit, JetStream enabled: an account's ``limits`` in its JWT.
_ACCOUNT_LIMITS = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                   "wildcards": True, "conn": -1, "leaf": -1, "mem_storage": -1,
                   "disk_storage": -1, "streams": -1, "consumer": -1}


class NKey:
    """An Ed25519 nkey of one role (operator, account, user)."""

    def __init__(self, prefix: int) -> None:
        self.seed: bytes = nkeys.encode_seed(os.urandom(32), prefix)
        self._pair = nkeys.from_seed(bytearray(self.seed))
        self.public: str = self._pair.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return bytes(self._pair.sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS v2 JWT: ``nats`` claims about ``subject``, signed by ``issuer``."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(
        json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = f"{header}.{_b64(json.dumps(claims).encode())}"
    return f"{body}.{_b64(issuer.sign(body.encode()))}"


def creds_file(user_jwt: str, user_seed: bytes) -> str:
    """The text of a ``.creds`` file, as ``nsc`` writes it."""
    return ("-----BEGIN NATS USER JWT-----\n" f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" f"{user_seed.decode()}\n"
            "------END USER NKEY SEED------\n")


@dataclass(frozen=True)
class OperatorSetup:
    """The server's auth settings (``config``) and the user's ``creds`` file."""

    config: str
    creds: Path
    account: str
    user: str


def operator_setup(directory: Path) -> OperatorSetup:
    """Write ``rrjobs.creds`` (mode 0600) into ``directory``; return the server settings."""
    operator = NKey(nkeys.PREFIX_BYTE_OPERATOR)
    system = NKey(nkeys.PREFIX_BYTE_ACCOUNT)
    account = NKey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = NKey(nkeys.PREFIX_BYTE_USER)
    operator_jwt = encode_jwt(operator, operator.public, "rrjobs-operator",
                              {"type": "operator", "system_account": system.public})
    system_jwt = encode_jwt(operator, system.public, "SYS",
                            {"type": "account", "limits": {**_ACCOUNT_LIMITS,
                                                           "mem_storage": 0,
                                                           "disk_storage": 0}})
    account_jwt = encode_jwt(operator, account.public, "rrjobs",
                             {"type": "account", "limits": _ACCOUNT_LIMITS})
    user_jwt = encode_jwt(account, user.public, "rrjobs-user",
                          {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
                           "payload": -1})
    creds = directory / "rrjobs.creds"
    creds.write_text(creds_file(user_jwt, user.seed))
    creds.chmod(0o600)
    config = (f"operator: {operator_jwt}\n"
              f"system_account: {system.public}\n"
              "resolver: MEMORY\n"
              "resolver_preload: {\n"
              f"  {system.public}: {system_jwt}\n"
              f"  {account.public}: {account_jwt}\n"
              "}\n")
    return OperatorSetup(config=config, creds=creds, account=account.public, user=user.public)
