"""Logs as one JSON object a line, carrying the unit of work each line belongs to.

A unit of work (an HTTP request, one job taken by a worker) opens a `scope`; whatever it learns on
the way (the partner, the job it created) it adds with `bind`. Every line logged inside it, by any
logger and in any thread it hands work to (Starlette's threadpool copies the context, and with it the
same field dict), carries those fields: `request_id`, `job_id`, `partner`. So one job can be followed
from the API's `POST /v1/jobs` to the worker that ran it by its `job_id`.

Secrets never reach a line: API keys (`eg_<id>_<secret>`, kept as `eg_<id>_[redacted]`), bearer
tokens, PEM private keys (the signing key) and passwords in URLs are cut from the message, the
exception text and every string field before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

Format = Literal["json", "text"]
FIELDS = ("request_id", "job_id", "partner")

_fields: ContextVar[dict[str, str] | None] = ContextVar("evalgate_log_fields", default=None)

_SECRETS = (
    (re.compile(r"\beg_([A-Za-z0-9]{16})_[A-Za-z0-9_-]{20,}"), r"eg_\1_[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    (
        re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        "[redacted private key]",
    ),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]+@"), r"\1:[redacted]@"),
)
# What every LogRecord has: anything else on a record was passed as `extra` and becomes a field
# (but uvicorn's copy of each message with terminal colours).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def scope(**fields: str | None) -> Iterator[dict[str, str]]:
    """A unit of work: its lines carry `fields` (and the enclosing unit's) until it ends."""
    inherited = _fields.get() or {}
    current = {**inherited, **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _fields.set(current)
    try:
        yield current
    finally:
        _fields.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current unit of work, seen by its every later line. Outside any unit (a
    recovery loop's thread) it does nothing: a field set there would stick to every later line."""
    current = _fields.get()
    if current is not None:
        current.update({k: str(v) for k, v in fields.items() if v is not None})


def current() -> dict[str, str]:
    return dict(_fields.get() or {})


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, service, msg, the unit of work's fields, any
    `extra` the call passed, and the exception if there is one."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "msg": redact(record.getMessage()),
        }
        line |= current()
        line |= {k: _clean(v) for k, v in _extras(record).items() if k not in line}
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the same facts, one readable line."""

    def __init__(self, service: str):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {**current(), **{k: v for k, v in _extras(record).items() if k not in FIELDS}}
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return redact(text)


def formatter(fmt: Format, service: str) -> logging.Formatter:
    return JsonFormatter(service) if fmt == "json" else TextFormatter(service)


def configure(fmt: Format, level: str, service: str) -> None:
    """The process's logging, set once at its entry point (`evalgate serve`, `evalgate worker`):
    one handler on the root logger, on stderr; uvicorn's and Celery's loggers go through it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings too, as lines of the same kind
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
