"""Serving an aiohttp application on a TCP address (the metrics endpoint and the
dashboard)."""

from __future__ import annotations

from aiohttp import web


async def start_tcp(app: web.Application, host: str | None, port: int, *,
                    shutdown_timeout: float = 2.0) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (``None``/empty host: every interface;
    port 0: a free one). Returns the runner (``cleanup()`` stops it) and the
    port bound. Raises ``OSError`` if the address is taken; nothing is left
    running then."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host or None, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return runner, int(addr[1])
    return runner, port
