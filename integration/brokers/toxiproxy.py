"""toxiproxy: TCP proxies between a client and a broker, with faults on demand.

The server (``toxiproxy-server``, built by ``integration/install.sh`` from the Go module
``github.com/Shopify/toxiproxy/v2`` into ``<cache>/toxiproxy-<version>/bin``) runs as a local
process on a free loopback port, like a broker (``provider.acquire_toxiproxy``); or it is the
user's, at ``$RRJOBS_TOXIPROXY_URL``. :class:`Toxiproxy` is an async client of its HTTP API:
:meth:`Toxiproxy.create` puts a proxy (a listener on a free loopback port) in front of a
broker's ``host:port``, and :class:`Proxy` adds and removes the faults ("toxics") on it:

* :meth:`Proxy.blackhole`: nothing gets through in either direction (``timeout`` toxics
  with ``timeout=0``: toxiproxy drops the bytes, connections stay open); :meth:`Proxy.heal`
  with ``reconnect=True`` then closes the connections the cut left with a hole in their
  byte stream, the way a peer's TCP timeout ends them after a real outage;
* :meth:`Proxy.latency`: ``latency`` ms added to every chunk, both directions;
* :meth:`Proxy.bandwidth`: at most ``rate`` KB/s each way;
* :meth:`Proxy.reset_peer`: every connection that sends anything is reset (TCP RST);
* :meth:`Proxy.disable` / :meth:`Proxy.enable`: the listener closes (every connection is
  closed, new ones are refused) and opens again on the same port.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import versions
from .base import (
    LOOPBACK,
    BrokerHandle,
    BrokerSpec,
    BrokerStartError,
    LocalPlan,
    cache_dir,
    free_ports,
    http_get,
    split_host_port,
)

ENV_VAR = "RRJOBS_TOXIPROXY_URL"


def toxiproxy_version() -> str:
    return versions.pinned()["TOXIPROXY_VERSION"]


def toxiproxy_bin_dir() -> Path:
    return cache_dir() / f"toxiproxy-{toxiproxy_version()}" / "bin"


class ToxiproxySpec(BrokerSpec):
    """toxiproxy-server as a local process (there is no container flavour: the proxies must
    listen where the tests and the brokers are, on this host's loopback)."""

    name = "toxiproxy"
    marker = "toxiproxy"
    env_var = ENV_VAR
    title = "toxiproxy"

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        status, body = http_get(f"{endpoint.rstrip('/')}/version", timeout)
        if status != 200:
            raise ConnectionError(f"toxiproxy at {endpoint}: /version answered {status} {body}")

    def local_unavailable(self) -> str | None:
        server = toxiproxy_bin_dir() / "toxiproxy-server"
        if not (server.parent.parent / ".complete").exists() or not os.access(server, os.X_OK):
            return (
                f"toxiproxy {toxiproxy_version()} not built in {server.parent} "
                "(run integration/install.sh; it needs Go)"
            )
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        (port,) = free_ports(1)
        return LocalPlan(
            argv=[
                str(toxiproxy_bin_dir() / "toxiproxy-server"),
                "-host",
                LOOPBACK,
                "-port",
                str(port),
            ],
            endpoint=f"http://{LOOPBACK}:{port}",
            env={"LOG_LEVEL": "warn"},
            version=toxiproxy_version(),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")


# --------------------------------------------------------------------------- the API client
class ToxiproxyError(RuntimeError):
    """The toxiproxy API refused a request (the status and its message)."""


@dataclass
class Proxy:
    """One proxy: clients connect to ``listen`` (``127.0.0.1:<port>``), it forwards to
    ``upstream``. Its methods add and remove toxics through ``client``."""

    client: Toxiproxy
    name: str
    listen: str
    upstream: str
    toxics: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return split_host_port(self.listen, 0)[1]

    def address(self, endpoint: str) -> str:
        """``endpoint`` (a URL or ``host:port`` of the upstream) with the proxy's host:port
        in its place: ``amqp://u:p@127.0.0.1:5672/`` -> ``amqp://u:p@127.0.0.1:<port>/``."""
        host, port = split_host_port(endpoint, 0)
        scheme, sep, rest = endpoint.rpartition("://")
        target = f"{host}:{port}"
        if target not in rest:
            raise ValueError(f"{endpoint!r} does not name {target}")
        return f"{scheme}{sep}{rest.replace(target, self.listen, 1)}"

    async def add(
        self, kind: str, stream: str = "downstream", *, toxicity: float = 1.0, **attributes: Any
    ) -> str:
        """Add a toxic of ``kind`` on ``stream`` (``downstream``: broker to client,
        ``upstream``: client to broker); its name."""
        name = f"{kind}-{stream}-{uuid.uuid4().hex[:6]}"
        await self.client.request(
            "POST",
            f"/proxies/{self.name}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attributes,
            },
        )
        self.toxics.append(name)
        return name

    async def add_both(self, kind: str, **attributes: Any) -> list[str]:
        return [await self.add(kind, stream, **attributes) for stream in ("upstream", "downstream")]

    async def remove(self, toxic: str) -> None:
        await self.client.request("DELETE", f"/proxies/{self.name}/toxics/{toxic}")
        if toxic in self.toxics:
            self.toxics.remove(toxic)

    async def listed(self) -> list[dict[str, Any]]:
        """The toxics the server has on this proxy."""
        result: list[dict[str, Any]] = await self.client.request(
            "GET", f"/proxies/{self.name}/toxics"
        )
        return result

    async def set_enabled(self, enabled: bool) -> None:
        await self.client.request("POST", f"/proxies/{self.name}", {"enabled": enabled})

    async def disable(self) -> None:
        """Close the listener and every connection through it; new connections are refused."""
        await self.set_enabled(False)

    async def enable(self) -> None:
        await self.set_enabled(True)

    # -- the faults -----------------------------------------------------------------
    async def blackhole(self) -> list[str]:
        """A cut in both directions: every byte dropped, no connection closed."""
        return await self.add_both("timeout", timeout=0)

    async def latency(self, ms: int, jitter: int = 0) -> list[str]:
        return await self.add_both("latency", latency=ms, jitter=jitter)

    async def bandwidth(self, kb_per_s: int) -> list[str]:
        return await self.add_both("bandwidth", rate=kb_per_s)

    async def reset_peer(self, after_ms: int = 0) -> list[str]:
        """Reset (TCP RST) each connection as soon as it carries data (after ``after_ms``)."""
        return await self.add_both("reset_peer", timeout=after_ms)

    async def heal(self, *, reconnect: bool = False) -> None:
        """Remove every toxic; ``reconnect`` also closes the open connections (the listener
        closes and opens again on its port) before traffic flows again."""
        if reconnect:
            await self.disable()
        for toxic in list(self.toxics):
            await self.remove(toxic)
        if reconnect:
            await self.enable()


class Toxiproxy:
    """An async client of the toxiproxy HTTP API at ``url``; an async context manager that
    deletes the proxies it created on exit (the server may be shared by other tests)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.proxies: dict[str, Proxy] = {}
        self._session: Any = None

    async def __aenter__(self) -> Toxiproxy:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            for name in list(self.proxies):
                await self.delete(name)
        finally:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            raise RuntimeError("use `async with Toxiproxy(url)`")
        async with self._session.request(method, self.url + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise ToxiproxyError(f"{method} {path}: {response.status} {text.strip()}")
            if not text or response.content_type != "application/json":
                return text
            return await response.json()

    async def version(self) -> str:
        return str(await self.request("GET", "/version")).strip()

    async def create(self, upstream: str, name: str | None = None) -> Proxy:
        """A proxy on a free loopback port in front of ``upstream`` (``host:port``, or a URL
        whose host:port is taken)."""
        host, port = split_host_port(upstream, 0)
        if not port:
            raise ValueError(f"no port in {upstream!r}")
        return await self.create_at(f"{host}:{port}", f"{LOOPBACK}:0", name)

    async def create_at(self, upstream: str, listen: str, name: str | None = None) -> Proxy:
        """A proxy listening on ``listen`` (``127.0.0.1:<port>``, port 0 for a free one)."""
        proxy_name = name or f"rrjobs-{uuid.uuid4().hex[:10]}"
        made = await self.request(
            "POST",
            "/proxies",
            {"name": proxy_name, "listen": listen, "upstream": upstream, "enabled": True},
        )
        proxy = Proxy(self, proxy_name, made["listen"], made["upstream"])
        self.proxies[proxy_name] = proxy
        return proxy

    async def delete(self, name: str) -> None:
        await self.request("DELETE", f"/proxies/{name}")
        self.proxies.pop(name, None)
