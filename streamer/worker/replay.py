"""Replay: run an app's agents over a range of a topic, outside its consumer group.

A replay reads ``[start, stop)`` of each chosen partition with its own throw-away group id,
so the app's committed offsets never move. Outputs go to the sinks (or, with ``dry_run``,
nowhere: they are handed to a callback instead). Tables are restored from their changelogs
into a temporary directory and changed only in memory: a replay never writes changelogs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from confluent_kafka import TopicPartition

from streamer.app import App
from streamer.errors import ConfigError, KafkaOperationError
from streamer.kafka.backend import Backend, Consumer, Producer
from streamer.kafka.offsets import GroupOffsets, ResetTarget, parse_datetime
from streamer.progress import Advance, bar
from streamer.state.keyed import TablePartition
from streamer.worker.checkpoint import AtLeastOnceCheckpoint, CheckpointFailed, Due
from streamer.worker.partition import Effects, Output, PartitionState

log = logging.getLogger("streamer.replay")

OutputSink = Callable[[Output], None]


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


@dataclass(frozen=True)
class ReplayPlan:
    """What to replay: ``ranges`` maps partition -> (start, stop) offsets, stop exclusive."""

    topic: str
    ranges: dict[int, tuple[int, int]]
    agents: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(stop - start for start, stop in self.ranges.values())


@dataclass
class ReplaySummary:
    """What a replay did."""

    records: int = 0
    outputs: int = 0
    errors: int = 0
    seconds: float = 0.0
    printed: list[Output] = field(default_factory=list)


def plan_replay(
    app: App,
    topic: str,
    backend: Backend,
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
    with GroupOffsets(app, backend) as offsets:
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


class ReplayCheckpoint(AtLeastOnceCheckpoint):
    """Flushes outputs but never commits offsets nor writes changelogs or RocksDB. With a
    ``dry_run`` sink, outputs are handed to it instead of being produced."""

    def __init__(
        self, consumer: Consumer, producer: Producer, brokers: str, *, dry_run: OutputSink | None
    ) -> None:
        super().__init__(consumer, producer, brokers)
        self._dry_run = dry_run

    def release(self, batch: list[Effects]) -> None:
        if self._dry_run is None:
            super().release(batch)
            return
        for effects in batch:
            for output in effects.outputs:
                self._dry_run(output)

    def _commit(
        self, due: Due, parts: list[TablePartition], states: list[PartitionState], deadline: float
    ) -> None:
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining or self.refusals:
            refusals = self._take_refusals()
            fatal = KafkaOperationError(
                f"replay outputs not delivered ({remaining} pending, {len(refusals)} failed"
                + (f", first: {refusals[0][1].str()})" if refusals else ")")
            )
            raise CheckpointFailed(str(fatal), refusals=refusals, fatal=fatal)
        for state, offset in due:
            state.committed = offset  # only local bookkeeping: nothing is sent to Kafka
        for part in parts:
            part.dirty.clear()  # tables stay in memory (the overlay): no changelog, no RocksDB


async def report_progress(
    plan: ReplayPlan, counter: Callable[[], int], every: float, advance: Advance | None = None
) -> None:
    """Until cancelled: move ``advance`` (a progress bar) ten times a second, or without
    one log the replay's progress every ``every`` seconds."""
    started = time.monotonic()
    while True:
        if advance is not None:
            await asyncio.sleep(0.1)
            advance(counter())
            continue
        await asyncio.sleep(every)
        done = counter()
        rate = done / (time.monotonic() - started)
        log.info("replayed %d of %d records (%.0f/s)", done, plan.total, rate)


async def run_replay(
    app: App, plan: ReplayPlan, backend: Backend, *, dry_run: OutputSink | None
) -> ReplaySummary:
    """Run ``plan`` to its end with clients from ``backend`` and return what happened (the
    worker's own loop, replay mode)."""
    from streamer.worker.runner import Worker

    worker = Worker(app, backend=backend, handle_signals=False, replay=plan, dry_run=dry_run)
    started = time.monotonic()
    with bar(f"replaying {plan.topic}", plan.total) as advance:
        progress = asyncio.ensure_future(
            report_progress(plan, lambda: worker.stats.records, 2.0, advance)
        )
        try:
            await worker.run()
        finally:
            progress.cancel()
            if advance is not None:
                advance(worker.stats.records)
    stats = worker.stats
    summary = ReplaySummary(stats.records, stats.outputs, stats.errors, time.monotonic() - started)
    log.info(
        "replay done: %d records, %d outputs%s, %d errors in %.1fs",
        summary.records,
        summary.outputs,
        " (dry run: not sent)" if dry_run else "",
        summary.errors,
        summary.seconds,
    )
    return summary
