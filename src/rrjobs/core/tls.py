"""Client TLS settings shared by the broker drivers (RoadRunner's ``tls:`` keys).

``key``/``cert``/``root_ca`` are PEM file paths; ``client_auth_type`` takes
RoadRunner's mTLS policy names, where any value but ``no_client_cert`` (or
``no_client_certs``, the spelling of RoadRunner's own ``.rr.yaml``) means the
broker requires a client certificate.

A ``tls:`` block that names no file (RoadRunner's samples carry one with empty
paths) enables nothing in RoadRunner; :func:`drop_empty_tls` reads it as no
block at all, with one INFO line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from typing import Any, Literal

from pydantic import BeforeValidator, field_validator, model_validator

from rrjobs.core.options import StrictModel, check_together

ClientAuthType = Literal[
    "no_client_cert",
    "request_client_cert",
    "require_any_client_cert",
    "verify_client_cert_if_given",
    "require_and_verify_client_cert",
]


class TLSConfig(StrictModel):
    """A driver's ``tls`` section.

    Attributes:
        key: the client's private key (PEM). Requires ``cert``.
        cert: the client's certificate (PEM). Requires ``key``.
        root_ca: the CA bundle (PEM) that verifies the broker; without it the
            system trust store is used.
        client_auth_type: whether the broker requires a client certificate:
            any value but ``no_client_cert`` requires ``cert`` and ``key``.
    """

    key: str = ""
    cert: str = ""
    root_ca: str = ""
    client_auth_type: ClientAuthType = "no_client_cert"

    @field_validator("client_auth_type", mode="before")
    @classmethod
    def _spelling(cls, value: Any) -> Any:
        return "no_client_cert" if value == "no_client_certs" else value

    @model_validator(mode="after")
    def _check_files(self) -> TLSConfig:
        check_together(("tls.key", self.key), ("tls.cert", self.cert),
                       "the client certificate and its key go together")
        if self.client_auth_type != "no_client_cert" and not self.cert:
            raise ValueError(f"client_auth_type {self.client_auth_type!r} needs a client "
                             "certificate: set tls.cert and tls.key")
        for name in ("key", "cert", "root_ca"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"tls.{name}: file {path!r} does not exist")
        return self


def client_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The client TLS context: TLS 1.2 or later, ``root_ca`` (else the system
    roots) to verify the broker, and the client certificate when configured.

    Reads files: call it in a thread or at construction, not on the loop's hot path.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.root_ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key)
    return context


#: the keys of a ``tls:`` block that turn TLS on (in RoadRunner as here)
TLS_FILES = ("key", "cert", "root_ca")


def optional_tls(where: str) -> BeforeValidator:
    """The validator of a section's ``tls`` field, ``Annotated[TLSConfig | None,
    optional_tls("amqp.tls")]``: :func:`drop_empty_tls`, its INFO line naming ``where``."""
    return BeforeValidator(lambda value: drop_empty_tls(value, where))


def drop_empty_tls(value: Any, where: str) -> Any:
    """``None`` for a ``tls:`` mapping naming no file (``key``, ``cert`` and
    ``root_ca`` empty) nor a client certificate policy, which RoadRunner ignores
    too, with one INFO line naming ``where``; any other value unchanged (a policy
    asking for a certificate then lacks one: an error). A ``mode="before"``
    validator's body."""
    if (isinstance(value, dict) and not any(value.get(name) for name in TLS_FILES)
            and value.get("client_auth_type") in (None, "", "no_client_cert", "no_client_certs")):
        logging.getLogger("rrjobs.config").info(
            "%s: names no key, cert or root_ca, so it enables nothing (as in RoadRunner); "
            "ignored", where)
        return None
    return value


HANDSHAKE_TIMEOUT = 5.0  #: seconds :func:`handshake_failure` gives a handshake


async def handshake_failure(host: str, port: int,
                            context: ssl.SSLContext) -> ssl.SSLError | None:
    """The TLS error that a handshake with ``host:port`` ends with, or None when it
    succeeds or fails below TLS (refused, unreachable, timed out).

    For clients that retry a certificate that does not verify as if it were a network
    fault: a driver asks this first, to fail at once with the TLS error.
    """
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port, ssl=context,
                                                      server_hostname=host)
    except ssl.SSLError as exc:
        return exc
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return None
