"""Logging as RoadRunner's ``logs:`` section asks (see docs/configuration.md).

* ``mode``: ``development`` (console lines, default level debug as
  RoadRunner), ``production`` (JSON lines, default level info), ``raw`` (the
  message alone), ``off``/``none`` (nothing).
* ``level``, ``encoding`` (``console`` or ``json``) override the mode's.
* ``output``: ``stderr`` (default), ``stdout`` or a file path (appended);
  ``file_logger_options.log_output`` is a file path too. ``err_output``:
  where records of level ERROR and above go instead (default: ``output``).
* ``channels.jobs`` (RoadRunner's per-plugin logger) wins over the top level.

Every record logged while a job is handled carries ``job_id``, ``pipeline``
and ``attempt`` (:mod:`rrjobs.runtime.logcontext`): JSON lines have them as
fields, console lines append ``[job=... pipeline=... attempt=...]``.

Every handler installed here masks credentials in its records (URL passwords
and the secrets of the loaded config: :class:`~rrjobs.core.secrets.SecretsFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from rrjobs.config import LogChannel, LogsConfig
from rrjobs.core.secrets import SecretsFilter
from rrjobs.runtime.logcontext import JOB_FIELDS, JobLogFilter

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: RoadRunner's level names → Python's
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "panic": logging.CRITICAL,
          "fatal": logging.CRITICAL}

_MARK = "_rrjobs_logs"


class ConsoleFormatter(logging.Formatter):
    """Console lines; a job's fields appended when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if getattr(record, "job_id", None) is None:
            return line
        tail = " ".join(f"{k.removesuffix('_id') if k == 'job_id' else k}={getattr(record, k)}"
                        for k in JOB_FIELDS)
        head, sep, rest = line.partition("\n")
        return f"{head} [{tail}]{sep}{rest}"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the
    job's fields when there is a job, ``error`` (the traceback) when there is
    an exception, and any ``extra=`` values that JSON can carry."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) or value is None \
                    else repr(value)
        if record.exc_info and not record.exc_text:  # as logging.Formatter caches it
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["error"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def _stream(target: str) -> logging.Handler:
    if target == "stderr":
        return logging.StreamHandler(sys.stderr)
    if target == "stdout":
        return logging.StreamHandler(sys.stdout)
    return logging.FileHandler(target, encoding="utf-8")


def _formatter(channel: LogChannel) -> logging.Formatter:
    if channel.mode == "raw":
        return logging.Formatter("%(message)s")
    encoding = channel.encoding or ("json" if channel.mode == "production" else "console")
    return JSONFormatter() if encoding == "json" else ConsoleFormatter(CONSOLE_FORMAT)


def level_of(channel: LogChannel | None, override: str | None) -> int:
    """``--log-level`` when given, else the section's level, else the mode's
    default (info without a section, as before the section existed)."""
    if override:
        return LEVELS[override.lower()]
    if channel is None:
        return logging.INFO
    if channel.level:
        return LEVELS[channel.level]
    return logging.DEBUG if channel.mode == "development" else logging.INFO


def configure(logs: LogsConfig | None, level: str | None = None) -> None:
    """Install rrjobs' handlers on the root logger, replacing those a previous
    call installed. Without a ``logs:`` section, handlers an embedding program
    installed are kept as they are (only the level is set), as
    :func:`logging.basicConfig` does."""
    root = logging.getLogger()
    channel = logs.effective() if logs is not None else None
    root.setLevel(level_of(channel, level))
    ours = [h for h in root.handlers if getattr(h, _MARK, False)]
    if channel is None and len(ours) < len(root.handlers):
        return
    for old in ours:
        root.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()
    if channel is not None and channel.mode in ("off", "none"):
        root.addHandler(_marked(logging.NullHandler()))
        return
    if channel is None:
        channel = LogChannel()
    _warn_rotation(channel)
    output = (channel.file_logger_options.log_output
              if channel.file_logger_options and channel.file_logger_options.log_output
              else channel.output)
    formatter = _formatter(channel)
    handlers: list[logging.Handler] = [_stream(output)]
    if channel.err_output and channel.err_output != output:
        handlers[0].addFilter(_Below(logging.ERROR))
        errors = _stream(channel.err_output)
        errors.setLevel(logging.ERROR)
        handlers.append(errors)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(JobLogFilter())
        handler.addFilter(SecretsFilter())
        if channel.line_ending is not None and isinstance(handler, logging.StreamHandler):
            handler.terminator = channel.line_ending
        root.addHandler(_marked(handler))


def _warn_rotation(channel: LogChannel) -> None:
    opts = channel.file_logger_options
    if opts is None:
        return
    for key in ("max_size", "max_age", "max_backups", "compress"):
        if getattr(opts, key) is not None:
            logging.getLogger("rrjobs.logs").warning(
                "logs.file_logger_options.%s: rrjobs does not rotate its log file; "
                "leave rotation to the system (logrotate with copytruncate)", key)


def _marked(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _MARK, True)
    return handler

