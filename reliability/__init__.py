"""The reliability suite: the same fault, scale-out and soak tests on every driver.

``make reliability`` runs the full matrix (``RRJOBS_RELIABILITY=full``) and renders
``docs/reliability.md`` from ``reliability/results/*.jsonl`` (:mod:`reliability.report`);
``make test`` runs the short form. The shared tools are in :mod:`reliability.workload`.
"""
