"""RPC addresses in RoadRunner's ``rpc.listen`` form.

* ``tcp://127.0.0.1:6001`` — host and port; an empty host (``tcp://:6001``)
  means ``127.0.0.1``, never every interface; port ``0`` asks the OS for a
  free port (the server reports the one it got).
* ``unix:///run/rrjobs.sock`` — a Unix domain socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from rrjobs.core.errors import ConfigError

#: The default address, as RoadRunner's ``rpc.listen``.
DEFAULT_LISTEN = "tcp://127.0.0.1:6001"
#: The host used when an address gives none.
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed RPC address. ``scheme`` is ``"tcp"`` (``host``, ``port``) or
    ``"unix"`` (``path``)."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str, *, key: str = "rpc.listen") -> Address:
        """Parse ``tcp://host:port`` or ``unix:///path``.

        Raises :class:`ConfigError` naming ``key`` for anything else.
        """
        raw = text.strip()
        if "://" not in raw:
            raise ConfigError(key, f"expected tcp://host:port or unix:///path, got {text!r}")
        scheme, _, rest = raw.partition("://")
        scheme = scheme.lower()
        if scheme == "unix":
            if not rest:
                raise ConfigError(key, f"unix address without a socket path: {text!r}")
            return cls("unix", path=rest)
        if scheme != "tcp":
            raise ConfigError(key, f"unsupported scheme {scheme!r} in {text!r} (use tcp or unix)")
        parts = urlsplit(f"//{rest}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(key, f"invalid port in {text!r}") from None
        if port is None:
            raise ConfigError(key, f"missing port in {text!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(key, f"unexpected path in {text!r}")
        return cls("tcp", host=parts.hostname or DEFAULT_HOST, port=port)

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def base_url(self) -> str:
        """The HTTP base URL a client uses for this address."""
        if self.scheme == "unix":
            return "http://localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
