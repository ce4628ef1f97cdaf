"""The worker's log: JSON lines for machines, one plain line per record for people.

Every record goes through the root logger, faust's, mode's and aiokafka's included, so one
formatter decides the format of everything the worker writes on stderr. The fields are listed
in docs/configuration.md (Logs).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson

FORMAT_ENV = "SEGSTREAM_LOG_FORMAT"
FORMATS = ("json", "console")
LogFormat = Literal["json", "console"]

Context = Callable[[], Mapping[str, Any]]


class LogFormatError(ValueError):
    """``SEGSTREAM_LOG_FORMAT`` names no format."""


def choose_format(environ: Mapping[str, str], *, demo: bool) -> LogFormat:
    """``SEGSTREAM_LOG_FORMAT`` if set; else console in the demo or on a terminal, JSON
    otherwise (a container's stderr is no terminal)."""
    value = environ.get(FORMAT_ENV, "").strip().lower()
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    if value:
        raise LogFormatError(f"{FORMAT_ENV}={value!r}: use json or console")
    return "console" if demo or sys.stderr.isatty() else "json"


def _utc(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the context, and the
    traceback as one string field when there is one."""

    def __init__(self, context: Context | None = None) -> None:
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body |= _context(self.context)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message``, no colours (the terminal may be a file)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")


def _context(context: Context | None) -> Mapping[str, Any]:
    if context is None:
        return {}
    try:
        return context()
    except Exception:  # logging must never fail because the context could not be read
        return {}


def configure(
    fmt: LogFormat,
    *,
    level: int = logging.INFO,
    quiet: tuple[str, ...] = (),
    context: Context | None = None,
) -> None:
    """Send every record to stderr through one formatter. ``quiet`` loggers log warnings
    and above only (the demo keeps faust's and aiokafka's chatter out of its output)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(context) if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)


def worker_id(web_port: int) -> str:
    """The pod name (the hostname in Kubernetes) and the HTTP port: unique per worker."""
    return f"{os.uname().nodename}:{web_port}"
