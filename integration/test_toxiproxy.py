"""The harness's toxiproxy: the server the install script built, and the API client's faults,
on a TCP echo server of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from integration.brokers import Broker
from integration.brokers.toxiproxy import Proxy, Toxiproxy, ToxiproxyError, toxiproxy_version
from integration.missing import unavailable

pytestmark = pytest.mark.toxiproxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}"


async def _connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = proxy.listen.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5.0)


async def test_server_is_the_pinned_version(toxiproxy_server: Broker, toxiproxy: Toxiproxy) -> None:
    assert toxiproxy_server.endpoint.startswith("http://127.0.0.1:")
    assert toxiproxy_version() in await toxiproxy.version()


async def test_proxy_forwards_and_blackhole_cuts_until_healed(
    toxiproxy: Toxiproxy, echo: str
) -> None:
    proxy = await toxiproxy.create(echo)
    assert proxy.listen.startswith("127.0.0.1:") and proxy.port > 0
    assert proxy.address(f"amqp://u:p@{echo}/vh") == f"amqp://u:p@{proxy.listen}/vh"
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"hello") == b"hello"

    await proxy.blackhole()
    assert {(t["type"], t["stream"]) for t in await proxy.listed()} == {
        ("timeout", "upstream"),
        ("timeout", "downstream"),
    }
    writer.write(b"lost")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(4), 0.5)

    await proxy.heal(reconnect=True)  # the cut connection is closed, new ones flow
    assert await proxy.listed() == []
    assert await asyncio.wait_for(reader.read(4), 5.0) == b""
    writer.close()
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"again") == b"again"
    writer.close()


async def test_reset_peer_latency_bandwidth_and_disable(toxiproxy: Toxiproxy, echo: str) -> None:
    proxy = await toxiproxy.create(echo)
    await proxy.reset_peer()
    reader, writer = await _connect(proxy)
    writer.write(b"x")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5.0)
    writer.close()
    await proxy.heal()

    await proxy.latency(50)
    await proxy.bandwidth(64)
    toxics = {(t["type"], t["stream"]): t["attributes"] for t in await proxy.listed()}
    assert toxics[("latency", "downstream")]["latency"] == 50
    assert toxics[("bandwidth", "upstream")]["rate"] == 64
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"slow" * 100) == b"slow" * 100
    writer.close()
    await proxy.heal()

    await proxy.disable()
    with pytest.raises(ConnectionRefusedError):
        await _connect(proxy)
    await proxy.enable()  # same port again
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"back") == b"back"
    writer.close()


async def test_proxies_are_deleted_with_their_client(toxiproxy_server: Broker, echo: str) -> None:
    async with Toxiproxy(toxiproxy_server.endpoint) as client:
        proxy = await client.create(echo)
        names = {p["name"] for p in (await client.request("GET", "/proxies")).values()}
        assert proxy.name in names
    async with Toxiproxy(toxiproxy_server.endpoint) as client:
        names = {p["name"] for p in (await client.request("GET", "/proxies")).values()}
        assert proxy.name not in names
        with pytest.raises(ToxiproxyError, match="404"):
            await client.request("GET", f"/proxies/{proxy.name}")


async def test_kafka_behind_a_proxy_advertises_the_proxy(toxiproxy: Toxiproxy) -> None:
    """A Kafka client that bootstraps through the proxy is told the proxy's address, so its
    later connections (to the partition leader, the group coordinator) go through it too."""
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped,unused-ignore]

    from integration.brokers.base import free_ports
    from integration.brokers.kafka import KafkaProxiedSpec

    spec = KafkaProxiedSpec({"PROXIED": tuple(free_ports(2))})  # type: ignore[dict-item]
    listen, advertised = spec.listeners["PROXIED"]
    if (why := spec.local_unavailable()) is not None:
        unavailable(why)
    handle = await asyncio.to_thread(spec.start_local)
    try:
        proxy = await toxiproxy.create_at(f"127.0.0.1:{listen}", f"127.0.0.1:{advertised}")
        admin = AIOKafkaAdminClient(bootstrap_servers=proxy.listen, request_timeout_ms=10_000)
        await admin.start()
        try:
            brokers = (await admin.describe_cluster())["brokers"]
        finally:
            await admin.close()
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", advertised)]
    finally:
        await asyncio.to_thread(handle.stop)
