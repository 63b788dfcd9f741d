"""Planning a replay: which offsets of which partitions of a topic, and which agents, from
what the user asked (offsets, datetimes); then running it (:func:`replay`).

What a replay does and guarantees: :mod:`streamer.worker.replay`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from confluent_kafka import TopicPartition

from streamer.app import App
from streamer.errors import ConfigError, KafkaOperationError
from streamer.kafka.backend import Backend, ConfluentBackend
from streamer.ops.offsets import GroupOffsets, ResetTarget, parse_datetime
from streamer.settings import Settings
from streamer.worker.partition import Output
from streamer.worker.replay import ReplayPlan, ReplaySummary
from streamer.worker.replaying import run_replay

if TYPE_CHECKING:
    from typing_extensions import Unpack


class ReplayRange(TypedDict, total=False):
    """Which records a replay covers: exactly one of ``from_offset``/``from_datetime``, at
    most one of ``to_offset`` (inclusive)/``to_datetime`` (exclusive), optionally only some
    ``partitions`` and one reading ``agent``. Datetimes: ISO 8601 text or aware datetimes."""

    partitions: list[int] | None
    from_offset: int | None
    from_datetime: str | datetime | None
    to_offset: int | None
    to_datetime: str | datetime | None
    agent: str | None


def plan_replay(
    app: App,
    topic: str,
    settings: Settings | None = None,
    backend: Backend | None = None,
    *,
    partitions: list[int] | None = None,
    from_offset: int | None = None,
    from_datetime: str | datetime | None = None,
    to_offset: int | None = None,
    to_datetime: str | datetime | None = None,
    agent: str | None = None,
) -> ReplayPlan:
    """Resolve and validate a replay range; raise ConfigError (changing nothing) for an
    unknown topic, partition or agent, an offset outside the retained range, or a datetime
    with no record after it."""
    readers = [a.name for a in app.agents if any(t.name == topic for t in a.topics)]
    if not readers:
        raise ConfigError(f"no agent of app {app.id!r} reads topic {topic!r}")
    if agent is not None:
        if agent not in readers:
            raise ConfigError(f"agent {agent!r} does not read {topic!r}; readers: {readers}")
        readers = [agent]
    if (from_offset is None) == (from_datetime is None):
        raise ConfigError("give exactly one of --from-offset and --from-datetime")
    if to_offset is not None and to_datetime is not None:
        raise ConfigError("give at most one of --to-offset and --to-datetime")
    settings = app.settings if settings is None else settings
    group = settings.group_id or app.id
    backend = ConfluentBackend() if backend is None else backend
    with GroupOffsets(group, settings, backend) as offsets:
        start_target = (
            ResetTarget("offset", from_offset)
            if from_offset is not None
            else ResetTarget("datetime", _moment(from_datetime))
        )
        starts = {c.partition: c.new for c in offsets.plan(topic, partitions, start_target)}
        ends = {po.partition: po.end for po in offsets.show([topic]) if po.partition in starts}
        if to_offset is not None:
            if to_offset < min(starts.values()):
                raise ConfigError(f"--to-offset {to_offset} is before the start of the range")
            stops = {p: min(to_offset + 1, ends[p]) for p in starts}
        elif to_datetime is not None:
            stops = _offsets_before(offsets, topic, starts, ends, _moment(to_datetime))
        else:
            stops = ends
    ranges = {p: (starts[p], max(stops[p], starts[p])) for p in sorted(starts)}
    return ReplayPlan(topic, ranges, tuple(readers))


def _moment(value: str | datetime | None) -> datetime:
    assert value is not None
    return value if isinstance(value, datetime) else parse_datetime(value)


def _offsets_before(
    offsets: GroupOffsets,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    moment: datetime,
) -> dict[int, int]:
    """Per partition, the first offset at or after ``moment`` (the end when none is)."""
    millis = int(moment.timestamp() * 1000)
    query = [TopicPartition(topic, p, millis) for p in starts]
    found = offsets.consumer.offsets_for_times(query, timeout=30)
    result = {}
    for tp in found:
        if tp.error is not None:
            raise KafkaOperationError(f"could not look up {topic}[{tp.partition}]: {tp.error}")
        result[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
    return result


async def replay(
    app: App,
    topic: str,
    *,
    settings: Settings | None = None,
    backend: Backend | None = None,
    dry_run: bool = False,
    on_output: Callable[[Output], None] | None = None,
    **selection: Unpack[ReplayRange],
) -> ReplaySummary:
    """Run the agents of ``app`` reading ``topic`` over a range of it, outside the consumer
    group (its committed offsets never move), and return a summary: :func:`plan_replay`,
    then :func:`run_replay`. ``selection`` picks the range (see
    :class:`ReplayRange`): ``to_offset`` is inclusive; without an
    end, the replay runs to the log end as of its start. With ``dry_run`` outputs are not
    sent: they are returned in ``summary.printed`` (and handed to ``on_output``)."""
    settings = app.settings if settings is None else settings
    plan = plan_replay(app, topic, settings, backend, **selection)
    printed: list[Output] = []

    def collect(output: Output) -> None:
        printed.append(output)
        if on_output is not None:
            on_output(output)

    summary = await run_replay(
        app, plan, settings=settings, backend=backend, dry_run=collect if dry_run else None
    )
    summary.printed = printed
    return summary
