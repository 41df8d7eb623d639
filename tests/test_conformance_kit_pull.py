"""The supervision section on a driver built from the kit's ``PullDriver`` template.

``pull_list`` keeps its messages in a list in the process: the smallest
driver whose consumer is a supervised fetch task, so that
:class:`~rrjobs.testing.suite.SupervisedTaskTests` runs against the real
:class:`~rrjobs.core.supervise.Supervisor` crash path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.pull import PullDriver
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.testing import DriverFactory
from rrjobs.testing.suite import SupervisedTaskTests


class ListOptions(BaseModel):
    prefetch: int = 10


class ListDriver(PullDriver):
    """Messages in a list; settling only frees the prefetch slot."""

    name = "pull_list"
    capabilities = Capabilities(delay=False, priority=False, headers=False)
    idle_wait = 0.01

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: ListOptions,
                 section: Any) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.messages: list[Message] = []
        self.messages_taken: list[Message] = []

    async def open(self, where: str) -> None:
        """Nothing to connect to."""

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        taken, self.messages = self.messages[:max_messages], self.messages[max_messages:]
        self.messages_taken.extend(taken)
        return taken

    def decode(self, raw: Message) -> Job:
        return Job(self, id=raw.id, name=raw.name, payload=raw.payload, headers={},
                   pipeline=self.pipeline_name, priority=self.priority)

    def poison(self, raw: Any, reason: str) -> Job:
        return self.poison_job(None, b"", reason)

    async def ack(self, job: Job) -> None:
        self.settled(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        self.settled(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.settled(job)

    async def _send(self, msg: Message) -> None:
        self.messages.append(msg)
        await asyncio.sleep(0)

    async def state(self) -> State:
        return State(pipeline=self.pipeline_name, driver=self.name, ready=self.ready,
                     active=len(self.messages) + self.lane.queued, priority=self.priority)


class ListConstructor(DriverConstructor):
    name = "pull_list"
    driver_class = ListDriver
    options_model = ListOptions


class ListFactory(DriverFactory):
    driver = "pull_list"
    constructor = ListConstructor
    test_timeout = 30.0


@pytest.fixture
def driver_factory() -> ListFactory:
    return ListFactory()


class TestKitPullSupervision(SupervisedTaskTests):
    marker = "pull_list"


async def test_the_jobs_waiting_for_room_in_the_priority_queue_are_undelivered() -> None:
    d = ListDriver(Pipeline(name="p", driver="pull_list"), PriorityQueue(1), ListOptions(), None)
    d.messages = [Message("n", b"", "p") for _ in range(3)]
    await d.resume("p")
    for _ in range(100):  # the one fetch: one job in the queue, two waiting for room
        if d.undelivered():
            break
        await asyncio.sleep(0.01)
    assert [j.id for j in d.undelivered()] == [m.id for m in d.messages_taken[1:]]
    await d.pause("p")  # given back with the queued one
    assert list(d.undelivered()) == [] and d.lane.out == 0
    await d.stop()
