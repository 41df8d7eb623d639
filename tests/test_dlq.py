"""``rrjobs dlq`` against ``rrjobs serve`` (subprocesses) on the memory and sqlite
drivers' dead-letter stores, and its refusal on a driver that keeps none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dlq_helpers import CONFIG_HEAD, DeadLetterVerbs, Served, serve

CONFIG = CONFIG_HEAD + """
  consume: [mem, lite, plain, forward]
  pipelines:
    mem:
      driver: memory
      retry: {max_attempts: 2, backoff: 0.01}
      config: {dead_letter_size: 100}
    lite:
      driver: sqlite
      retry: {max_attempts: 2, backoff: 0.01}
      config: {file: jobs.db, dead_letter: true}
    plain:
      driver: memory
      retry: {max_attempts: 1}
    forward:
      driver: memory
      retry: {max_attempts: 1, dead_letter: plain}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("dlq"), CONFIG) as running:
        yield running


class TestMemoryAndSqlite(DeadLetterVerbs):
    @pytest.fixture(params=["mem", "lite"])
    def pipeline(self, request: pytest.FixtureRequest) -> str:
        name: str = request.param
        return name


def test_a_driver_without_a_dead_letter_store_is_refused_by_name(served: Served) -> None:
    for args in (("list", "plain"), ("peek", "plain", "x"), ("replay", "plain", "--all"),
                 ("purge", "plain", "--yes")):
        out = served.rrjobs("dlq", *args)
        assert out.returncode == 1, args
        assert "CapabilityError" in out.stderr
        assert "'plain'" in out.stderr and "'memory'" in out.stderr
        assert "dead_letter_read" in out.stderr
    forward = served.rrjobs("dlq", "list", "forward")
    assert forward.returncode == 1
    assert "go to pipeline 'plain' (retry.dead_letter)" in forward.stderr
    unknown = served.rrjobs("dlq", "list", "nope")
    assert unknown.returncode == 1 and "PipelineNotFoundError" in unknown.stderr
