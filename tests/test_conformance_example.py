"""The conformance suite against the tutorial driver, ``examples/my_awesome_driver``.

This module is what a driver author writes: a :class:`DriverFactory` that says how to
configure pipelines and how to reach the broker (here, a spool directory) from outside
the driver, one ``driver_factory`` fixture, and one class inheriting the suite.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from rrjobs import Message
from rrjobs.testing import ConformanceSuite, DriverFactory, Pipe

try:
    import my_awesome_driver  # noqa: F401
except ImportError:  # not installed: use the source tree (the factory registers it itself)
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples/my_awesome_driver/src"))

from my_awesome_driver.driver import Driver
from my_awesome_driver.plugin import Plugin
from my_awesome_driver.spool import Spool


class AwesomeFactory(DriverFactory):
    """Pipelines of ``my_awesome_driver``, each on its own queue directory."""

    driver = "my_awesome_driver"
    constructor = Plugin
    shared_broker = True  # a second driver on the same directory shares the queue
    ack_deadline = 2.0  # visibility_timeout for the lease and redelivery tests
    quiet_period = 0.3
    delay_unit = 0.4
    delay_tolerance = 2.0
    redelivery_timeout = 5.0

    def __init__(self, root: Path) -> None:
        self.root = root

    def global_config(self) -> dict[str, Any]:
        # fsync off: the suite tests semantics, not the disk.
        return {"my_awesome_driver": {"dir": str(self.root), "fsync": False}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"queue": name, "poll_interval": "20ms"}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"visibility_timeout": seconds}

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    def _spool(self, pipe: Pipe) -> Spool:
        return Spool(self.root / pipe.options["queue"], fsync=False)

    async def _publish(self, pipe: Pipe, attributes: Mapping[str, str], body: bytes,
                       priority: int = 0) -> None:
        await asyncio.to_thread(self._spool(pipe).publish, [(attributes, body, priority, 0)])

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        await self._publish(pipe, headers, body)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        # The spool's attributes are text: bytes that are not UTF-8 travel escaped.
        text = {k: v.decode("utf-8", "surrogateescape") for k, v in headers.items()}
        await self._publish(pipe, text, body)

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        # Written by hand, as a RoadRunner producer lays out its attributes.
        attributes = {
            "rr_id": msg.id,
            "rr_job": msg.name,
            "rr_pipeline": msg.pipeline,
            "rr_headers": json.dumps(msg.headers),
            "rr_delay": "0",
            "rr_priority": str(msg.priority),
            "rr_auto_ack": "false",
        }
        await self._publish(pipe, attributes, msg.payload, msg.priority)

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        def read() -> list[bytes]:
            dead = self.root / pipe.options["queue"] / "dead"
            return [p.read_bytes().partition(b"\n")[2] for p in sorted(dead.iterdir())]

        return await asyncio.to_thread(read)

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {}  # dead_letter defaults to true: failed jobs go to the spool's dead/

    async def dead_letter_messages(self, name: str) -> list[Message]:
        def read() -> list[Message]:
            dead = self.root / name / "dead"
            out = []
            for path in sorted(dead.iterdir()) if dead.is_dir() else []:
                head, _, body = path.read_bytes().partition(b"\n")
                attrs = json.loads(head)
                out.append(Message(attrs["rr_job"], body, name, id=attrs["rr_id"],
                                   headers=json.loads(attrs["rr_headers"])))
            return out

        return await asyncio.to_thread(read)

    async def cleanup(self, names: Sequence[str]) -> None:
        for name in names:
            await asyncio.to_thread(shutil.rmtree, self.root / name, True)


@pytest.fixture
def driver_factory(tmp_path: Path) -> AwesomeFactory:
    return AwesomeFactory(tmp_path)


class TestMyAwesomeDriverConformance(ConformanceSuite):
    marker = "my_awesome_driver"


def test_the_example_declares_the_capabilities_the_suite_exercises() -> None:
    """Nothing in the suite is skipped by capability."""
    caps = Driver.capabilities
    assert caps.durable and caps.redelivery_on_crash and caps.lease_extension
    assert caps.dead_letter and caps.delay and caps.priority and caps.pause and caps.headers
