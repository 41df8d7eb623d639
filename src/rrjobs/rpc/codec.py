"""The proto3 JSON form of RoadRunner's ``jobs.v1`` DTOs.

Bodies follow the proto3 JSON mapping of ``roadrunner/api/jobs/v1/jobs.proto``::

    Job      {job, id, payload (base64), headers: {key: {value: [..]}}, options}
    Options  {priority, pipeline, delay, auto_ack, topic, metadata, offset, partition}
    PushRequest {job}           PushBatchRequest {jobs}
    Pipelines {pipelines: [..]} DeclareRequest {pipeline: {string: string}}
    Stats {stats: [Stat]}       Stat {pipeline, driver, queue, active, delayed,
                                      reserved, ready, priority}

As proto3 JSON parsers do, decoding accepts both the proto field names and
their lowerCamelCase forms (``auto_ack``/``autoAck``), integers as numbers or
decimal strings, standard or URL-safe base64 with or without padding, and
``null`` for "not set"; it rejects unknown fields. ``delay`` also accepts a
fraction of a second (rrjobs delays are float seconds). Encoding uses the proto
field names and plain JSON numbers. Each ``Stat`` carries two rrjobs additions:
``error_message`` and ``counters``.

The dead-letter calls are rrjobs additions (see :func:`letter_to_json`)::

    DeadLetterList   {pipeline, limit}     → {dead_letters: [summary]}
    DeadLetterPeek   {pipeline, id}        → {dead_letter: letter}
    DeadLetterReplay {pipeline, ids, all}  → {replayed: [..], missing: [..]}
    DeadLetterPurge  {pipeline}            → {purged: n}

Every decoding problem raises :class:`BadRequestError` whose message starts
with the key path (``jobs[2].options.priority: expected an integer``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from rrjobs.core.deadletters import DEFAULT_LIMIT, DeadLetter
from rrjobs.core.headers import Headers
from rrjobs.core.message import Message
from rrjobs.core.state import State
from rrjobs.rpc.errors import BadRequestError
from rrjobs.runtime.stats import Counters, PipelineStat

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)

_JOB_FIELDS = {"job": "job", "id": "id", "payload": "payload", "headers": "headers",
               "options": "options"}
_OPTION_FIELDS = {
    "priority": "priority",
    "pipeline": "pipeline",
    "delay": "delay",
    "auto_ack": "auto_ack",
    "autoAck": "auto_ack",
    "topic": "topic",
    "metadata": "metadata",
    "offset": "offset",
    "partition": "partition",
}


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- scalars -------------------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequestError(f"{where or 'body'}: expected an object, got {_kind(value)}")
    return value


def _fields(value: Any, where: str, names: Mapping[str, str]) -> dict[str, Any]:
    """The object's fields under their proto names; unknown or doubled fields are errors."""
    obj = _object(value, where)
    out: dict[str, Any] = {}
    for key, v in obj.items():
        name = names.get(key)
        if name is None:
            known = ", ".join(sorted(set(names.values())))
            raise BadRequestError(f"{_path(where, key)}: unknown field (known: {known})")
        if name in out:
            raise BadRequestError(f"{_path(where, name)}: given twice")
        out[name] = v
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequestError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _int(value: Any, where: str, bounds: tuple[int, int] = INT64) -> int:
    if value is None:
        return 0
    result: int
    if isinstance(value, bool):
        raise BadRequestError(f"{where}: expected an integer, got a boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise BadRequestError(f"{where}: expected an integer, got {value!r}")
        result = int(value)
    elif isinstance(value, str):
        try:
            result = int(value.strip())
        except ValueError:
            raise BadRequestError(f"{where}: expected an integer, got {value!r}") from None
    else:
        raise BadRequestError(f"{where}: expected an integer, got {_kind(value)}")
    if not bounds[0] <= result <= bounds[1]:
        raise BadRequestError(f"{where}: {result} is out of range")
    return result


def _seconds(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        raise BadRequestError(f"{where}: expected a number of seconds, got a boolean")
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise BadRequestError(f"{where}: expected a number of seconds, got {value!r}") from None
    else:
        raise BadRequestError(f"{where}: expected a number of seconds, got {_kind(value)}")
    if not math.isfinite(number) or number < 0:
        raise BadRequestError(f"{where}: must be a finite number ≥ 0, got {value!r}")
    return number


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequestError(f"{where}: expected true or false, got {_kind(value)}")
    return value


def _bytes(value: Any, where: str) -> bytes:
    text = _str(value, where)
    if not text:
        return b""
    std = text.strip().replace("-", "+").replace("_", "/")
    std += "=" * (-len(std) % 4)
    try:  # straight from the str: no ASCII copy of a large payload
        return binascii.a2b_base64(std, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{where}: invalid base64") from None


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequestError(f"{where}: expected an array of strings, got {_kind(value)}")
    out: list[str] = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise BadRequestError(f"{where}[{i}]: expected a string, got {_kind(v)}")
        out.append(v)
    return out


def _headers(value: Any, where: str) -> Headers:
    obj = _object(value, where)
    out: Headers = {}
    for key, hv in obj.items():
        here = f"{where}.{key}"
        inner = _fields(hv, here, {"value": "value"})
        out[key] = _string_list(inner.get("value"), f"{here}.value")
    return out


# -- messages --------------------------------------------------------------------------------


def message_from_json(value: Any, where: str = "job", *, require_id: bool = False) -> Message:
    """Decode a ``Job``. ``require_id``: an empty ``id`` is an error (``Push``),
    otherwise a fresh uuid4 is used (``PushBatch``)."""
    if value is None:
        raise BadRequestError(f"{where}: required")
    f = _fields(value, where, _JOB_FIELDS)
    job_id = _str(f.get("id"), f"{where}.id")
    if require_id and not job_id:
        raise BadRequestError(f"{where}.id: empty ID field not allowed")
    opts = _fields(f.get("options"), f"{where}.options", _OPTION_FIELDS)
    ow = f"{where}.options"
    pipeline = _str(opts.get("pipeline"), f"{ow}.pipeline")
    if not pipeline:
        raise BadRequestError(f"{ow}.pipeline: required (the pipeline to push to)")
    return Message(
        name=_str(f.get("job"), f"{where}.job"),
        payload=_bytes(f.get("payload"), f"{where}.payload"),
        pipeline=pipeline,
        id=job_id,
        headers=_headers(f.get("headers"), f"{where}.headers"),
        priority=_int(opts.get("priority"), f"{ow}.priority"),
        delay=_seconds(opts.get("delay"), f"{ow}.delay"),
        auto_ack=_bool(opts.get("auto_ack"), f"{ow}.auto_ack"),
        topic=_str(opts.get("topic"), f"{ow}.topic"),
        metadata=_str(opts.get("metadata"), f"{ow}.metadata"),
        offset=_int(opts.get("offset"), f"{ow}.offset"),
        partition=_int(opts.get("partition"), f"{ow}.partition", INT32),
    )


def message_to_json(msg: Message) -> dict[str, Any]:
    """Encode a :class:`Message` as a ``Job``."""
    delay: int | float = int(msg.delay) if float(msg.delay).is_integer() else msg.delay
    return {
        "job": msg.name,
        "id": msg.id,
        "payload": base64.b64encode(bytes(msg.payload)).decode("ascii"),
        "headers": {k: {"value": list(v)} for k, v in msg.headers.items()},
        "options": {
            "priority": msg.priority,
            "pipeline": msg.pipeline,
            "delay": delay,
            "auto_ack": msg.auto_ack,
            "topic": msg.topic,
            "metadata": msg.metadata,
            "offset": msg.offset,
            "partition": msg.partition,
        },
    }


# -- requests ---------------------------------------------------------------------------------


def push_request(body: Any) -> Message:
    """``PushRequest{job}``."""
    f = _fields(body, "", {"job": "job"})
    return message_from_json(f.get("job"), "job", require_id=True)


def push_batch_request(body: Any) -> list[Message]:
    """``PushBatchRequest{jobs}``."""
    f = _fields(body, "", {"jobs": "jobs"})
    jobs = f.get("jobs")
    if jobs is None:
        return []
    if not isinstance(jobs, list):
        raise BadRequestError(f"jobs: expected an array of jobs, got {_kind(jobs)}")
    return [message_from_json(j, f"jobs[{i}]") for i, j in enumerate(jobs)]


def pipelines_request(body: Any) -> list[str]:
    """``Pipelines{pipelines}``."""
    f = _fields(body, "", {"pipelines": "pipelines"})
    return _string_list(f.get("pipelines"), "pipelines")


def empty_request(body: Any) -> None:
    """``Empty``: no fields."""
    _fields(body, "", {})


def declare_request(body: Any) -> dict[str, str]:
    """``DeclareRequest{pipeline: map<string, string>}``.

    Values should be strings, as PHP clients send them; numbers and booleans
    are accepted and turned into ``"10"`` / ``"true"``. Arrays and objects must
    be sent JSON-encoded as strings (``"retry": "{\\"max_attempts\\": 2}"``).
    """
    f = _fields(body, "", {"pipeline": "pipeline"})
    pipe = _object(f.get("pipeline"), "pipeline")
    out: dict[str, str] = {}
    for key, value in pipe.items():
        where = f"pipeline.{key}"
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float) and math.isfinite(value):
            out[key] = str(value)
        else:
            raise BadRequestError(
                f"{where}: expected a string, got {_kind(value)} (send arrays and objects "
                "as JSON-encoded strings)"
            )
    return out


def declare_to_json(options: Mapping[str, Any]) -> dict[str, Any]:
    """Encode a declare map with every value a string (bools as true/false,
    mappings and lists as JSON), as PHP clients do."""
    out: dict[str, str] = {}
    for key, value in options.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return {"pipeline": out}


# -- stats ---------------------------------------------------------------------------------------

_STATE_FIELDS = {f.name for f in fields(State)}
_COUNTER_FIELDS = {f.name for f in fields(Counters)}


def stat_to_json(stat: PipelineStat) -> dict[str, Any]:
    """Encode one ``Stat`` (with ``error_message`` and ``counters``)."""
    return stat.as_dict()


def stats_from_json(body: Any) -> list[PipelineStat]:
    """Decode ``Stats{stats}``; unknown keys (a newer server) are ignored."""
    f = _object(body, "")
    raw = f.get("stats") or []
    if not isinstance(raw, list):
        raise BadRequestError(f"stats: expected an array, got {_kind(raw)}")
    out: list[PipelineStat] = []
    for i, item in enumerate(raw):
        obj = _object(item, f"stats[{i}]")
        state_kw = {k: v for k, v in obj.items() if k in _STATE_FIELDS}
        if "pipeline" not in state_kw or "driver" not in state_kw:
            raise BadRequestError(f"stats[{i}]: pipeline and driver are required")
        for key in ("active", "delayed", "reserved", "priority"):
            if key in state_kw:
                state_kw[key] = _int(state_kw[key], f"stats[{i}].{key}")
        counters_raw = _object(obj.get("counters"), f"stats[{i}].counters")
        counters = Counters(**{k: _int(v, f"stats[{i}].counters.{k}")
                               for k, v in counters_raw.items() if k in _COUNTER_FIELDS})
        out.append(PipelineStat(State(**state_kw), counters))
    return out


# -- dead letters (rrjobs additions) ---------------------------------------------------------


def _pipeline(f: Mapping[str, Any]) -> str:
    pipeline = _str(f.get("pipeline"), "pipeline")
    if not pipeline:
        raise BadRequestError("pipeline: required")
    return pipeline


def dead_letter_list_request(body: Any) -> tuple[str, int]:
    """``{pipeline, limit}`` (limit: 1 to 10,000; 0 or absent, as proto3 sends an
    unset field: 100)."""
    f = _fields(body, "", {"pipeline": "pipeline", "limit": "limit"})
    limit = _int(f.get("limit"), "limit") or DEFAULT_LIMIT
    if not 1 <= limit <= 10_000:
        raise BadRequestError(f"limit: must be 1 to 10000, got {limit}")
    return _pipeline(f), limit


def dead_letter_peek_request(body: Any) -> tuple[str, str]:
    """``{pipeline, id}``."""
    f = _fields(body, "", {"pipeline": "pipeline", "id": "id"})
    job_id = _str(f.get("id"), "id")
    if not job_id:
        raise BadRequestError("id: required (the job id of the dead letter)")
    return _pipeline(f), job_id


def dead_letter_replay_request(body: Any) -> tuple[str, list[str] | None]:
    """``{pipeline, ids, all}``: job ids, or ``all: true`` (``None``), not both."""
    f = _fields(body, "", {"pipeline": "pipeline", "ids": "ids", "all": "all"})
    ids = _string_list(f.get("ids"), "ids")
    every = _bool(f.get("all"), "all")
    if every and ids:
        raise BadRequestError("ids: give job ids or all, not both")
    if not every and not ids:
        raise BadRequestError("ids: required (job ids to replay), or all: true")
    return _pipeline(f), None if every else ids


def dead_letter_purge_request(body: Any) -> str:
    """``{pipeline}``."""
    return _pipeline(_fields(body, "", {"pipeline": "pipeline"}))


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``DeadLetterList`` shows it: its fields and headers
    (proto form, as a ``Job``'s), its payload's ``size`` instead of the payload."""
    out = letter.summary()
    out["priority"] = letter.priority
    out["headers"] = {k: {"value": list(v)} for k, v in letter.headers.items()}
    return out


def letter_to_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``DeadLetterPeek`` answers: the summary with its
    ``payload`` (base64)."""
    out = letter_summary(letter)
    out["payload"] = base64.b64encode(letter.payload).decode("ascii")
    return out


def letter_from_json(value: Any, where: str = "dead_letter") -> DeadLetter:
    """Decode :func:`letter_to_json`'s form (the derived fields are read from
    the headers again; unknown keys, from a newer server, are ignored)."""
    obj = _object(value, where)
    return DeadLetter(id=_str(obj.get("id"), f"{where}.id"),
                      name=_str(obj.get("name"), f"{where}.name"),
                      payload=_bytes(obj.get("payload"), f"{where}.payload"),
                      headers=_headers(obj.get("headers"), f"{where}.headers"),
                      pipeline=_str(obj.get("pipeline"), f"{where}.pipeline"),
                      priority=_int(obj.get("priority"), f"{where}.priority"),
                      failed_at=_str(obj.get("failed_at"), f"{where}.failed_at"))
