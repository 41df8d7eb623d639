"""``benchmarks/peers/report.py``: the ratios of ``rrjobs serve --processes 2`` to 1 and
the bounds the page gives with them, from medians of the shape the runs write."""

from __future__ import annotations

from typing import Any

from benchmarks.peers.report import cpus_busy, process_ratios, ptc_ceiling


def run(enqueue: float, consume: float, e2e: float, client: float = 0.2,
        broker: float = 0.2) -> dict[str, Any]:
    return {"enqueue_jobs_per_s": enqueue, "consume_jobs_per_s": consume,
            "end_to_end_jobs_per_s": e2e, "client_cpu_s_per_1000": client,
            "broker_cpu_s_per_1000": broker}


def test_a_concurrent_run_tells_how_many_cpus_one_process_kept_busy() -> None:
    one, two = run(6000, 5000, 5000), run(6000, 6000, 6000)
    assert cpus_busy(one) == 0.4 / 1000 * 5000  # 0.4 ms of CPU a job, 5,000 jobs a second
    line = process_ratios("JSON only", "light", "concurrent", one, two, cpus=4)
    assert line == ("- JSON only, concurrent: 2 processes consume **1.20x** as fast as 1; "
                    "end to end 1.20x (target 1.4x: not met); 1 process already kept 2.00 of "
                    "the 4 CPUs busy (its client processes and RabbitMQ), so at the same CPU "
                    "per job 2 processes would fill them at about 2.00x.")


def test_produce_then_consume_gives_the_bound_of_one_producer() -> None:
    one, two = run(8000, 800, 8000 * 800 / 8800), run(8000, 1600, 8000 * 1600 / 9600)
    assert abs(ptc_ceiling(one) - (1 / 8000 + 1 / 800) / (1 / 8000 + 1 / 1600)) < 1e-12
    line = process_ratios("1 ms busy loop", "cpu", "ptc", one, two, cpus=2)
    assert line.startswith("- 1 ms busy loop, produce, then consume: 2 processes consume "
                           "**2.00x** as fast as 1; end to end 1.83x (target 1.8x: met)")
    assert line.endswith("would give end to end 1.83x at most.")
    assert "CPUs busy" not in line


def test_without_cpu_figures_no_cpu_bound_is_given() -> None:
    one = run(6000, 5000, 5000)
    del one["broker_cpu_s_per_1000"]  # --use-env: the broker's CPU is not measured
    assert cpus_busy(one) is None
    line = process_ratios("JSON only", "light", "concurrent", one, run(6000, 6000, 6000), 2)
    assert line.endswith("(target 1.4x: not met).")
