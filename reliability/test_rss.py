"""The soak's measuring tools on known data: the plateau check, the latency
percentiles and the RSS sampler."""

from __future__ import annotations

import math

import pytest

from reliability.rss import LatencyHistogram, RssSampler, Sample, plateau, rss_bytes

pytestmark = [pytest.mark.reliability]

MB = 1_000_000


def run(*points: tuple[int, int]) -> list[Sample]:
    """Samples (done, rss in MB), one a second."""
    return [Sample(float(i), rss * MB, done) for i, (done, rss) in enumerate(points)]


def test_the_reference_is_the_first_sample_past_a_quarter_of_the_jobs() -> None:
    samples = run((0, 30), (100, 40), (250, 50), (600, 52), (1000, 54))
    p = plateau(samples, 1000)
    assert (p.reference_mb, p.final_mb) == (50, 54)
    assert p.growth == pytest.approx(0.08)
    assert p.ok


def test_growth_past_ten_percent_fails_the_plateau() -> None:
    p = plateau(run((0, 30), (300, 50), (1000, 56)), 1000)
    assert p.growth == pytest.approx(0.12)
    assert not p.ok
    assert plateau(run((0, 30), (300, 50), (1000, 56)), 1000, tolerance=0.15).ok


def test_no_sample_past_the_mark_is_an_error() -> None:
    with pytest.raises(ValueError, match="after 250 of 1000 jobs"):
        plateau(run((0, 30), (200, 40)), 1000)
    with pytest.raises(ValueError, match="no RSS sample"):
        plateau([], 1000)


def test_percentiles_are_within_a_bucket_of_the_exact_ones() -> None:
    h = LatencyHistogram()
    values = [i * 1000 for i in range(1, 10_001)]  # 1 us .. 10 ms
    for v in values:
        h.record(v)
    width = 2 ** (1 / LatencyHistogram.STEPS)
    for p, exact in ((50, 5.0), (99, 9.9)):
        got = h.percentile(p)
        assert exact <= got <= exact * width, (p, got)
    assert h.percentile(100) == 10.0  # capped at the largest value
    assert h.total == len(values)


def test_one_value_and_clock_skew() -> None:
    h = LatencyHistogram()
    h.record(-5)  # a clock step backwards counts as 0
    assert h.percentile(50) == 0.0
    h.record(3_000_000)
    assert math.isclose(h.percentile(99), 3.0)
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(50)


def test_the_sampler_reads_this_process_with_its_progress() -> None:
    done = [0]
    sampler = RssSampler(lambda: done[0], interval=0.01).start()
    ballast = bytearray(64 * MB)  # touched, so resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    done[0] = 7
    samples = sampler.stop()
    assert samples[0].done == 0 and samples[-1].done == 7
    assert samples[-1].rss - samples[0].rss >= 60 * MB
    assert rss_bytes() >= samples[-1].rss - 8 * MB
    assert [s.t for s in samples] == sorted(s.t for s in samples)
    del ballast
