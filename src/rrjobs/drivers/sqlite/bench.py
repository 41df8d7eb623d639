"""The sqlite driver's entry for ``rrjobs bench`` (``docs/benchmarks.md#sqlite``): no
bare-SQL baseline. A loop that inserts and deletes without reserving does not compare
like with like; the driver is measured against the durable local queues it competes
with instead (huey, persist-queue: ``benchmarks/peers``, ``docs/performance.md``).
``rrjobs bench --driver sqlite`` reports rrjobs' own figures.
"""

from __future__ import annotations

from rrjobs.core.baseline import DriverBench

#: The ``rrjobs.bench`` entry point of the sqlite driver.
BENCH = DriverBench(None)
