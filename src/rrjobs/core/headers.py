"""Header and attribute names shared by every driver (RoadRunner's ``rr_*`` keys).

These are RoadRunner's names (``api-plugins/jobs/job.go``) so that a RoadRunner
producer and an rrjobs consumer can share a queue. ``rr_attempts`` is an rrjobs
addition: the number of times the job has been delivered to a handler and
failed, carried as an ordinary job header so that it survives every broker.
"""

from __future__ import annotations

RR_ID = "rr_id"
RR_JOB = "rr_job"
RR_HEADERS = "rr_headers"
RR_PIPELINE = "rr_pipeline"
RR_DELAY = "rr_delay"
RR_PRIORITY = "rr_priority"
RR_AUTO_ACK = "rr_auto_ack"

#: rrjobs: failed attempts so far (job header, decimal string).
RR_ATTEMPTS = "rr_attempts"
#: rrjobs: on a dead-lettered copy, the last error and the source pipeline.
RR_ERROR = "rr_error"
RR_ORIGINAL_PIPELINE = "rr_original_pipeline"

#: Job name given to a message that carries no ``rr_job`` (a foreign producer).
DEDUCED_BY_RR = "deduced_by_rr"

Headers = dict[str, list[str]]


def merge_headers(base: Headers, extra: Headers | None) -> Headers:
    """Return a copy of ``base`` with ``extra`` merged in (``maps.Copy``
    semantics: a key in ``extra`` replaces the whole value list)."""
    out = {k: list(v) for k, v in base.items()}
    if extra:
        for k, v in extra.items():
            out[k] = list(v)
    return out


def attempts_of(headers: Headers) -> int:
    """The ``rr_attempts`` count carried in ``headers`` (0 when absent or bad)."""
    vals = headers.get(RR_ATTEMPTS)
    if not vals:
        return 0
    try:
        return max(0, int(vals[0]))
    except ValueError:
        return 0
