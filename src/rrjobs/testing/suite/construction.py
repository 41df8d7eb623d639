"""Construction: from config and from declare, ``consume`` gating, bad options."""

from __future__ import annotations

import pytest

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import ConfigError, PipelineStateError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.testing.harness import Harness, Recorder, conformance_case
from rrjobs.testing.suite.base import SuiteBase

#: An option no driver has: every driver must refuse it, never ignore it.
UNKNOWN_OPTION = "surely_not_an_option"


def _paths(exc: ConfigError) -> list[str]:
    return [path for path, _ in exc.problems]


class ConstructionTests(SuiteBase):
    """A driver is built from the config file or from ``Declare`` and refuses bad options."""

    @conformance_case
    async def test_driver_from_config(self, h: Harness) -> None:
        """``driver_from_config`` builds an idle driver; ``run`` starts it."""
        pipe = await h.pipe(via="config", priority=3, run=False)
        assert pipe.driver.name == h.factory.driver
        assert isinstance(pipe.capabilities, Capabilities)
        state = await pipe.state()
        assert state.pipeline == pipe.name
        assert state.driver == h.factory.driver
        assert state.priority == 3
        assert state.ready is False, "a driver must not consume before run()"
        await pipe.run()
        assert (await pipe.state()).ready is True
        await pipe.push(payload=b"from-config")
        job = await pipe.receive()
        assert job.payload == b"from-config"
        assert job.priority == 3, "priority 0 must inherit the pipeline priority"
        await job.ack()

    @conformance_case
    async def test_sharing_is_declared_before_the_pipeline_opens(self, h: Harness) -> None:
        """``shared_queue`` and ``reserved_per_consumer``, read before a pipeline opens
        (``rrjobs serve --processes`` does), are the built driver's own; ``shared_queue``
        is what a second driver with the same options shows (the factory's
        ``shared_broker``, which the shared-queue tests check with two consumers)."""
        for via in ("config", "declare"):
            pipe = await h.pipe(via=via, run=False)
            before, built = h.declared(pipe), pipe.capabilities
            assert (before.shared_queue, before.reserved_per_consumer) == (
                built.shared_queue, built.reserved_per_consumer), (
                f"{pipe}: declared before it opens {before}, built {built}")
            if built.shared_queue:
                assert h.factory.shared_broker, (
                    f"{pipe}: shared_queue is declared but the factory's shared_broker is false")
            else:
                if via == "config":
                    await pipe.run()
                else:
                    await pipe.resume()
                await pipe.push(payload=b"mine")
                await h.assert_not_shared(pipe, "a job of a driver without shared_queue")
                await (await pipe.receive()).ack()

    @conformance_case
    async def test_driver_from_declare(self, h: Harness) -> None:
        """``driver_from_pipeline`` reads string options as ``Declare`` sends them;
        ``resume`` starts a declared pipeline."""
        pipe = await h.pipe(via="declare", priority=7, run=False)
        assert pipe.driver.name == h.factory.driver
        state = await pipe.state()
        assert state.pipeline == pipe.name
        assert state.priority == 7
        assert state.ready is False
        await pipe.resume()
        assert (await pipe.state()).ready is True
        await pipe.push(payload=b"from-declare")
        job = await pipe.receive()
        assert job.payload == b"from-declare"
        assert job.priority == 7
        await job.ack()

    @conformance_case
    async def test_config_pipeline_in_consume_is_consumed(self, h: Harness) -> None:
        """Only the config pipelines named in ``jobs.consume`` start consuming."""
        rec = Recorder()
        on, off = h.new_name("on"), h.new_name("off")
        jobs = h.runtime(rec.app, {on: h.pipeline_entry(on), off: h.pipeline_entry(off)},
                         consume=[on])
        async with jobs:
            await jobs.push(Message("conformance.on", b"on", on))
            await jobs.push(Message("conformance.off", b"off", off))
            handled = await rec.wait_for(1, h.factory.delivery_timeout)
            assert handled[0].pipeline == on
            await rec.expect_count(1, h.factory.quiet_period)
            ready = {s.state.pipeline: s.state.ready for s in await jobs.stat()}
            assert ready == {on: True, off: False}

    @conformance_case
    async def test_config_pipeline_not_in_consume_starts_on_resume(self, h: Harness) -> None:
        """A config pipeline outside ``consume`` keeps pushed jobs until resumed."""
        rec = Recorder()
        name = h.new_name()
        jobs = h.runtime(rec.app, {name: h.pipeline_entry(name)}, consume=[])
        async with jobs:
            await jobs.push(Message("conformance.idle", b"idle", name))
            await rec.expect_count(0, h.factory.quiet_period)
            await jobs.resume([name])
            handled = await rec.wait_for(1, h.factory.delivery_timeout)
            assert handled[0].payload == b"idle"

    @conformance_case
    async def test_declared_pipeline_waits_for_resume(self, h: Harness) -> None:
        """A declared pipeline outside ``consume`` is registered but idle until resumed."""
        rec = Recorder()
        jobs = h.runtime(rec.app, consume=[])
        async with jobs:
            name = h.new_name("declared")
            await jobs.declare(h.declaration(name, priority="4"))
            assert name in jobs.list()
            await jobs.push(Message("conformance.declared", b"declared", name))
            await rec.expect_count(0, h.factory.quiet_period)
            (stat,) = await jobs.stat()
            assert stat.state.ready is False
            await jobs.resume([name])
            handled = await rec.wait_for(1, h.factory.delivery_timeout)
            assert handled[0].payload == b"declared"
            assert handled[0].priority == 4

    @conformance_case
    async def test_declared_pipeline_in_consume_runs_at_once(self, h: Harness) -> None:
        """A declared pipeline named in ``consume`` starts consuming when declared."""
        rec = Recorder()
        name = h.new_name("declared")
        jobs = h.runtime(rec.app, consume=[name])
        async with jobs:
            await jobs.declare(h.declaration(name))
            await jobs.push(Message("conformance.declared", b"at-once", name))
            handled = await rec.wait_for(1, h.factory.delivery_timeout)
            assert handled[0].payload == b"at-once"
            with pytest.raises(PipelineStateError):
                await jobs.resume([name])

    @conformance_case
    async def test_unknown_config_option_names_its_key_path(self, h: Harness) -> None:
        """An unknown option is an error naming ``jobs.pipelines.<name>.config.<key>``."""
        name = h.new_name()
        with pytest.raises(ConfigError) as caught:
            await h.pipe(name=name, extra={UNKNOWN_OPTION: 1}, run=False)
        assert f"jobs.pipelines.{name}.config.{UNKNOWN_OPTION}" in _paths(caught.value)
        assert f"jobs.pipelines.{name}.config.{UNKNOWN_OPTION}" in str(caught.value)

    @conformance_case
    async def test_bad_config_value_fails_the_start_with_its_key_path(self, h: Harness) -> None:
        """A bad value fails ``Jobs.start`` with an error naming its key path."""
        name = h.new_name()
        entry = h.pipeline_entry(name, extra={"priority": "very-high"})
        jobs = h.runtime(Recorder().app, {name: entry}, consume=[name])
        with pytest.raises(ConfigError) as caught:
            await jobs.start()
        assert f"jobs.pipelines.{name}.config.priority" in _paths(caught.value)

    @conformance_case
    async def test_unknown_declare_option_names_its_key_path(self, h: Harness) -> None:
        """``Declare`` with an unknown option fails naming ``declare.<name>.<key>``."""
        jobs = h.runtime(Recorder().app)
        async with jobs:
            name = h.new_name("declared")
            with pytest.raises(ConfigError) as caught:
                await jobs.declare(h.declaration(name, **{UNKNOWN_OPTION: "1"}))
            assert f"declare.{name}.{UNKNOWN_OPTION}" in _paths(caught.value)
            assert name not in jobs.list()

    @conformance_case
    async def test_bad_declare_value_names_its_key_path(self, h: Harness) -> None:
        """``driver_from_pipeline`` refuses a bad value naming ``declare.<name>.<key>``."""
        name = h.new_name("declared")
        with pytest.raises(ConfigError) as caught:
            await h.pipe(via="declare", name=name, extra={"priority": "very-high"}, run=False)
        assert f"declare.{name}.priority" in _paths(caught.value)

    @conformance_case
    async def test_operations_for_another_pipeline_are_refused(self, h: Harness) -> None:
        """One driver serves one pipeline: other names are refused, not served."""
        pipe = await h.pipe()
        other = pipe.name + "-other"
        with pytest.raises(PipelineStateError):
            await pipe.driver.push(Message("conformance.job", b"", other))
        with pytest.raises(PipelineStateError):
            await pipe.driver.pause(other)
        with pytest.raises(PipelineStateError):
            await pipe.driver.resume(other)
        with pytest.raises(PipelineStateError):
            await pipe.driver.run(Pipeline(name=other, driver=h.factory.driver))
        await pipe.expect_nothing()
        assert (await pipe.state()).ready is True

    @conformance_case
    async def test_stop_is_final_and_idempotent(self, h: Harness) -> None:
        """After ``stop`` a second ``stop`` is harmless; pushes and resumes are refused."""
        pipe = await h.pipe()
        await pipe.stop()
        await pipe.stop()
        with pytest.raises(PipelineStateError):
            await pipe.push(payload=b"too late")
        with pytest.raises(PipelineStateError):
            await pipe.resume()
