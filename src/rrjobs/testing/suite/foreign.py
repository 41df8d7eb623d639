"""Foreign and RoadRunner messages published with the broker's own client."""

from __future__ import annotations

import copy
import uuid

from rrjobs.testing.harness import Harness, conformance_case, hook
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.delivery import assert_headers


def assert_fresh_uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise AssertionError(f"job id {value!r} is not a fresh uuid") from None


class ForeignMessageTests(SuiteBase):
    """Messages not written by rrjobs are consumed, as RoadRunner consumes them.

    On a driver with no wire format (``factory.wire`` false) a push is the only
    way in: the same bodies and headers are pushed and arrive as pushed, with
    what the driver fills in (a fresh id, the pipeline priority) as for a
    foreign message. Where RoadRunner keeps another format
    (``factory.roadrunner_layout`` false), its jobs arrive through a push too.
    """

    @conformance_case
    async def test_raw_message_is_consumed_as_deduced_by_rr(self, h: Harness) -> None:
        """No ``rr_*`` metadata: job ``deduced_by_rr``, a fresh id each, the
        pipeline priority, the body untouched."""
        pipe = await h.pipe(priority=7)
        name = await h.publish_foreign(pipe, b"raw \xff body")
        await h.publish_foreign(pipe, b"")
        jobs = await pipe.receive_many(2)
        assert sorted(j.payload for j in jobs) == [b"", b"raw \xff body"]
        for job in jobs:
            assert job.name == name
            assert_fresh_uuid(job.id)
            assert job.priority == 7
            await job.ack()
        assert jobs[0].id != jobs[1].id
        await pipe.expect_nothing()

    @conformance_case
    async def test_raw_message_headers_become_job_headers(self, h: Harness) -> None:
        pipe = await h.pipe()
        name = await h.publish_foreign(pipe, b"{}", {"x-foreign": "yes", "kind": "json"})
        job = await pipe.receive()
        assert job.name == name
        assert_headers(job.headers, {"x-foreign": ["yes"], "kind": ["json"]})
        await job.ack()

    @conformance_case
    async def test_roadrunner_layout_message_decodes_to_the_same_job(self,
                                                                     h: Harness) -> None:
        """One value per header: RoadRunner's Kafka layout carries no more."""
        pipe = await h.pipe()
        msg = pipe.message("roadrunner.Job", b"\x00from php\xff",
                           id=f"rr-{uuid.uuid4()}", priority=4,
                           headers={"attempts": ["1"], "origin": ["php"]})
        if h.factory.roadrunner_layout:
            await hook(h.factory.publish_roadrunner(pipe, msg))
        else:
            await pipe.driver.push(copy.deepcopy(msg))
        job = await pipe.receive()
        assert (job.name, job.id, job.priority) == ("roadrunner.Job", msg.id, 4)
        assert job.payload == b"\x00from php\xff"
        assert_headers(job.headers, {"attempts": ["1"], "origin": ["php"]})
        await job.ack()
        await pipe.expect_nothing()
