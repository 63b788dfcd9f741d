"""Log output: readable text by default, JSON lines with ``--log-format json``.

A JSON line has ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``message``,
``partition`` when the line is about one partition, ``partitions`` when it names several, and
``exception`` when it carries a traceback. A record names its partition either through
``extra`` (``partition`` alone, or ``topic`` and ``partition``), the structured way, or by
``topic[n]`` (or ``topic[0,1]``) in its message, which is how the worker's log lines name
partitions today (a pattern, kept as the fallback until those calls pass ``extra``).
Any other ``extra`` field is written as it is. The JSON itself is python-json-logger's.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter as _JsonFormatterBase

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# ``orders[3]``, ``my.topic-v2[12]``, or several at once: ``orders[0,1]``.
_NAMED_PARTITIONS = re.compile(r"([\w.\-]+)\[(\d+(?:,\d+)*)\]")


class JsonFormatter(_JsonFormatterBase):
    """One JSON object per record (see the module docstring), built by python-json-logger:
    fields a call passes with ``extra=`` appear in the object as they are."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
                "stack_info": "stack",
            },
            json_ensure_ascii=False,
            json_default=str,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        # ``topic`` and ``partition`` extras become one ``partition`` field, ``topic[n]``.
        log_data.pop("topic", None)
        log_data.pop("partition", None)
        named = partitions_of(record, record.getMessage())
        if len(named) == 1:
            log_data["partition"] = named[0]
        elif named:
            log_data["partitions"] = named


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


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, so that a live progress
    display (:mod:`streamer.progress`), which redirects it, prints log lines above its bars.
    ``json_logs`` tells the display that lines, not bars, are wanted."""

    def __init__(self, json_logs: bool) -> None:
        super().__init__(sys.stderr)
        self.json_logs = json_logs

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: int | str, log_format: LogFormat = "text") -> None:
    """Send every log record to stderr at ``level``, as text or as JSON lines."""
    handler = StderrHandler(json_logs=log_format == "json")
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])


class _ProcessLabel(logging.Filter):
    """Stamps every record with the label of the worker process that logs it."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_process = self.label
        return True


def label_process(label: str) -> None:
    """Name this process in every log line (a child of ``streamer worker --processes N``):
    text lines read ``... INFO    [process-1] streamer.worker: ...``, JSON lines get a
    ``worker_process`` field. Call after :func:`configure_logging`."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ProcessLabel(label))
        if not isinstance(handler.formatter, JsonFormatter):  # JSON shows the field as it is
            handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace(
                "%(name)s", "[%(worker_process)s] %(name)s"
            )))  # fmt: skip


__all__ = [
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "label_process",
    "partitions_of",
]
