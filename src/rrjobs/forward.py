"""``rrjobs forward``: a process that only forwards delayed jobs.

A delayed job pushed to a Kafka or NATS pipeline waits in the pipeline's delay
topic (``<topic>.rrjobs-delayed``) or delay stream (``<stream>-rrjobs-delayed``)
until an rrjobs process that declares the pipeline moves it to its topic or
stream when it is due (see ``docs/roadrunner.md``, "Delayed jobs"). ``rrjobs
serve`` does that for every pipeline it declares; this command does only that,
for producers that push from a client (a script, a PHP application through an
rrjobs server that is gone again) and have no rrjobs server of their own.

It builds the config's pipelines (all, or those named) with no application and
no handlers, consumes none of them, pushes no schedules, and serves neither
metrics nor the dashboard; the RPC listens only with ``--rpc`` (for ``rrjobs
stat``). Several forwarders, and servers, may run at once: a Kafka delay group
or a NATS durable consumer gives each due job to one of them (at-least-once).
Exit codes as ``rrjobs serve`` (0, 1, 2 for a configuration problem).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.rpc.address import Address
from rrjobs.rpc.server import RPCServer
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs
from rrjobs.server import configure_logging, exit_code, until_signalled

log = logging.getLogger("rrjobs.forward")


def forwarding_config(config: Config, pipelines: Sequence[str] = ()) -> Config:
    """``config`` for a forwarder: the named pipelines (all when none is named, an unknown
    name is a :class:`ConfigError`) without their ``retry`` (no handler fails here),
    consuming nothing, pushing no schedules, no metrics, no dashboard."""
    jobs: dict[str, Any] = dict(config.data.get("jobs") or {})
    declared: dict[str, Any] = dict(jobs.get("pipelines") or {})
    for name in pipelines:
        if name not in declared:
            raise ConfigError("--pipeline", f"no pipeline {name!r} in jobs.pipelines "
                              f"(there are: {', '.join(declared) or 'none'})")
    kept = {name: {k: v for k, v in dict(body or {}).items() if k != "retry"}
            for name, body in declared.items() if not pipelines or name in pipelines}
    jobs.update(pipelines=kept, consume=[], schedules_enabled=False)
    data = {k: v for k, v in config.data.items() if k not in ("metrics", "dashboard")}
    return Config({**data, "jobs": jobs}, source=config.source)


async def forward(config: Config, listen: str | None = None) -> None:
    """Run :class:`Jobs` with ``config`` (see :func:`forwarding_config`: each driver's
    ``serve`` starts its forwarder) and, with ``listen``, an :class:`RPCServer`, until SIGINT
    or SIGTERM (:func:`~rrjobs.server.until_signalled`)."""
    if listen:
        Address.parse(listen, key="--rpc")
    jobs = Jobs(config, App())
    rpc = RPCServer.from_config(jobs, config.rpc, listen) if listen else None

    async def start() -> None:
        await jobs.start()
        if rpc is not None:
            try:
                await rpc.start()
            except BaseException:
                await jobs.stop()
                raise

    async def stop() -> None:
        if rpc is not None:
            await rpc.stop()
        await jobs.stop()

    def started() -> None:
        names = jobs.list()
        log.info("rrjobs forwarding delayed jobs of %d pipelines (%s); stop with SIGINT or "
                 "SIGTERM", len(names), ", ".join(names) or "none")

    await until_signalled(start, stop, started)


def run(config_path: str, pipelines: Sequence[str] = (), listen: str | None = None,
        log_level: str | None = None) -> int:
    """The body of ``rrjobs forward``; returns the exit code (as ``rrjobs serve``'s)."""
    configure_logging(log_level)

    def main() -> None:
        config = forwarding_config(Config.load(config_path), pipelines)
        if config.logs is not None:
            configure_logging(log_level, config.logs)
        asyncio.run(forward(config, listen))

    return exit_code(main)
