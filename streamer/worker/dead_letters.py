"""Dead-letter records: the original record, untouched, plus headers that say why.

Headers added (all UTF-8 text): ``streamer.error.type``, ``streamer.error.message`` (at most
1,000 characters), ``streamer.error.traceback`` (at most 4,000), ``streamer.source.topic``,
``streamer.source.partition``, ``streamer.source.offset``, ``streamer.attempts``,
``streamer.agent`` and ``streamer.failed.at`` (ISO 8601, UTC).
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime

from streamer.events import Headers
from streamer.kafka.backend import Message
from streamer.worker.partition import Output

PREFIX = "streamer."
MESSAGE_LIMIT = 1_000
TRACEBACK_LIMIT = 4_000


def dead_letter(
    topic: str, message: Message, error: BaseException, *, agent: str, attempts: int
) -> Output:
    """The dead-letter record for ``message``, which ``agent`` failed on ``attempts`` times."""
    trace = "".join(traceback.format_exception(error))
    # Consumed headers are always a list of (name, bytes) pairs.
    headers: Headers = list(message.headers() or [])  # type: ignore[arg-type]
    headers += [
        ("streamer.error.type", type(error).__name__.encode()),
        ("streamer.error.message", str(error)[:MESSAGE_LIMIT].encode()),
        ("streamer.error.traceback", trace[-TRACEBACK_LIMIT:].encode()),
        ("streamer.source.topic", str(message.topic()).encode()),
        ("streamer.source.partition", str(message.partition()).encode()),
        ("streamer.source.offset", str(message.offset()).encode()),
        ("streamer.attempts", str(attempts).encode()),
        ("streamer.agent", agent.encode()),
        ("streamer.failed.at", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
    ]
    return (topic, message.key(), message.value(), headers)


def original_headers(headers: Headers | None) -> Headers:
    """The record's own headers, without those a dead-letter added."""
    return [(k, v) for k, v in headers or [] if not k.startswith(PREFIX)]


def header(headers: Headers | None, name: str) -> str | None:
    """The text value of header ``name`` (the last one, if repeated)."""
    found = None
    for key, value in headers or []:
        if key == name:
            found = value.decode() if isinstance(value, bytes) else value
    return found
