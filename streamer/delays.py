"""Delayed delivery: ``await topic.send(..., delay=timedelta(minutes=5))`` or ``deliver_at=dt``.

With ``App(..., delayed_delivery=True)`` the app has a delay topic, ``<app id>-delayed``
(:data:`DELAY_PARTITIONS` partitions). A delayed send writes the record there, encoded for
its destination, with two headers: ``streamer.deliver-at`` (epoch milliseconds) and
``streamer.deliver-to`` (the destination topic). The worker reads the delay topic with an
internal agent (``delayed-release``) whose lanes *hold* each record until it is due: the
lane sleeps on the worker's clock, buffered records wait behind it, and once the lane's
buffer is full the partition is paused (the ordinary backpressure): nothing polls. When a
record is due the agent forwards it to its destination with its key, value and other
headers, staged with the delay record like any output: it goes out through the committer,
under exactly-once in the transaction that commits the delay record's offset. So a record
is released once under exactly-once, at least once otherwise, and a restart (or kill -9)
re-reads the uncommitted delay records and waits for the same due times.

Order: the release agent keeps the order of each key; records of keys that share a lane
are released in the order they were sent, so a record due sooner waits behind one due
later that was sent before it into the same lane (head-of-line). Retry topics
(:class:`~streamer.ErrorPolicy` ``retry_topics``) avoid this with one topic per delay.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import UTC, datetime, timedelta

from streamer._context import current_lane
from streamer.errors import ConfigError
from streamer.events import Event, Headers

DELIVER_AT = "streamer.deliver-at"
DELIVER_TO = "streamer.deliver-to"
DELAY_PARTITIONS = 4
RELEASE_AGENT = "delayed-release"
RELEASE_CONCURRENCY = 8  # lanes per delay partition: fewer keys wait behind one another


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"10m"``, ``"2h"``, ``"1d"`` -> timedelta; ConfigError otherwise."""
    text = text.strip()
    unit = _DURATION_UNITS.get(text[-1:])
    try:
        amount = float(text[:-1]) if unit is not None else -1.0
    except ValueError:
        amount = -1.0
    if unit is None or amount < 0:
        raise ConfigError(f"{text!r} is not a duration; write e.g. 90s, 10m, 2h or 1d")
    return timedelta(seconds=amount * unit)


def delay_topic(app_id: str) -> str:
    return f"{app_id}-delayed"


def due_millis(deliver_at: datetime | None, delay: timedelta | None, now: float) -> int:
    """When a record sent now should be delivered, in epoch ms. A naive ``deliver_at`` is
    taken as UTC; exactly one of the two must be given."""
    if (deliver_at is None) == (delay is None):
        raise ConfigError("send(): pass either deliver_at=datetime or delay=timedelta, not both")
    if delay is not None:
        if not isinstance(delay, timedelta):
            raise ConfigError(f"send(): delay must be a timedelta, not {type(delay).__name__}")
        return int((now + delay.total_seconds()) * 1000)
    if not isinstance(deliver_at, datetime):
        raise ConfigError(f"send(): deliver_at must be a datetime, not {type(deliver_at).__name__}")
    if deliver_at.tzinfo is None:
        deliver_at = deliver_at.replace(tzinfo=UTC)
    return int(deliver_at.timestamp() * 1000)


def delay_headers(headers: Headers | None, due_ms: int, destination: str) -> Headers:
    return [
        *(headers or []),
        (DELIVER_AT, str(due_ms).encode()),
        (DELIVER_TO, destination.encode()),
    ]


def due_of(headers: Headers) -> float | None:
    """The due time (epoch seconds) a record's headers carry; None when it has none."""
    for name, value in headers:
        if name == DELIVER_AT and value is not None:
            try:
                return int(value) / 1000
            except ValueError:
                return None
    return None


def split_headers(headers: Headers) -> tuple[str | None, Headers]:
    """(destination, the headers without the delay headers)."""
    destination = None
    kept: Headers = []
    for name, value in headers:
        if name == DELIVER_TO:
            destination = value.decode() if isinstance(value, bytes) else value
        elif name != DELIVER_AT:
            kept.append((name, value))
    return destination, kept


async def release(stream: AsyncIterable[Event]) -> None:
    """The internal agent over the delay topic: its lanes hand a record out only once it
    is due; it forwards the record to its destination, staged with it."""
    lane = current_lane.get()
    assert lane is not None
    async for event in stream:
        destination, headers = split_headers(event.headers)
        if destination is None:
            continue  # not a delayed record (written by hand): nothing to deliver
        lane.stage(destination, event.key, event.value, headers or None)
