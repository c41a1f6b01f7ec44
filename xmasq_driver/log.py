"""Structured logs: one line per event, `key=value` fields after the message."""

from __future__ import annotations

import logging
import sys
from typing import Any

_SECRET_SUFFIXES = ("_key", "password", "token", "secret")


def is_secret(name: str) -> bool:
    """A field or setting whose value is never shown (logs, `xmasq config`)."""
    return name.endswith(_SECRET_SUFFIXES)


def _fmt(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname.lower(),
            record.name,
            _fmt(record.getMessage()),
        ]
        for k, v in fields.items():
            if is_secret(k):
                v = "<redacted>"
            parts.append(f"{k}={_fmt(v)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Logger:
    """logging.Logger with keyword fields: log.info("endpoint joined", endpoint=eid)."""

    def __init__(self, name: str):
        self._log = logging.getLogger("xmasq." + name)

    def _emit(self, level: int, msg: str, exc_info: bool = False, **fields: Any) -> None:
        self._log.log(level, msg, extra={"fields": fields}, exc_info=exc_info)

    def debugging(self) -> bool:
        """Whether debug lines are kept: for fields that cost something to make."""
        return self._log.isEnabledFor(logging.DEBUG)

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit(logging.INFO, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._emit(logging.WARNING, msg, **fields)

    def error(self, msg: str, exc_info: bool = False, **fields: Any) -> None:
        self._emit(logging.ERROR, msg, exc_info=exc_info, **fields)


def get(name: str) -> Logger:
    return Logger(name)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("xmasq")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
