"""Log output: readable text by default, JSON lines with ``--log-format json``.

A JSON line has ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``message``,
``partition`` when the line is about one partition, ``partitions`` when it names several, and
``exception`` when it carries a traceback. A record names its partition either through
``extra`` (``partition`` alone, or ``topic`` and ``partition``) or by ``topic[n]`` (or
``topic[0,1]``) in its message, which is how streamer's own log lines name partitions.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# ``orders[3]``, ``my.topic-v2[12]``, or several at once: ``orders[0,1]``.
_NAMED_PARTITIONS = re.compile(r"([\w.\-]+)\[(\d+(?:,\d+)*)\]")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        named = partitions_of(record, message)
        if len(named) == 1:
            line["partition"] = named[0]
        elif named:
            line["partitions"] = named
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def partitions_of(record: logging.LogRecord, message: str) -> list[str]:
    """The partitions a record is about, as ``topic[n]``, in order of first mention."""
    partition = getattr(record, "partition", None)
    if partition is not None:
        topic = getattr(record, "topic", None)
        return [f"{topic}[{partition}]" if topic is not None else str(partition)]
    named = (
        f"{topic}[{partition}]"
        for topic, partitions in _NAMED_PARTITIONS.findall(message)
        for partition in partitions.split(",")
    )
    return list(dict.fromkeys(named))


def configure_logging(level: int | str, log_format: LogFormat = "text") -> None:
    """Send every log record to stderr at ``level``, as text or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])


__all__ = ["TEXT_FORMAT", "JsonFormatter", "LogFormat", "configure_logging", "partitions_of"]
