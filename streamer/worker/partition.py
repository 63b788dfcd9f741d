"""Per-partition bookkeeping: the completed-prefix tracker and staged outputs.

Offsets travel with the data: every dispatched record gets a :class:`Pending` entry, in
offset order. An entry is done when every agent reading its topic has completed it. The
head of the queue is popped while done; popping releases the entry's staged outputs (in
offset order, DESIGN §2 rule 2) and moves the commit position to ``offset + 1`` (rule 3).
Offsets that were never delivered (compaction, transaction markers) are never tracked, so
they cannot stall the prefix.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import TopicPartition

from streamer.events import Event, Headers
from streamer.kafka.backend import Message
from streamer.state.table import TablePartition, TableWrite

if TYPE_CHECKING:
    from streamer.worker.lanes import Lane

log = logging.getLogger("streamer.worker")

Output = tuple[str, bytes | None, bytes | None, Headers | None]
ReleaseFn = Callable[[list[Output]], None]


# Stands in for the event of an offset no lane ever sees (undecodable records).
SKIPPED_EVENT = Event(None, None, [], 0, "", -1, -1)


class WorkerStats:
    """Running totals of one worker (or one replay): records dispatched, outputs released,
    events an agent failed on."""

    __slots__ = ("errors", "outputs", "records")

    def __init__(self) -> None:
        self.records = 0
        self.outputs = 0
        self.errors = 0


class Pending:
    """One record on its way through the agents of a partition."""

    __slots__ = ("attempts", "done", "event", "message", "offset", "outputs", "remaining", "writes")

    def __init__(self, event: Event, remaining: int, offset: int, message: Message) -> None:
        self.event = event
        self.offset = offset
        self.message = message  # the raw record, for dead letters
        self.attempts = 0
        self.remaining = remaining
        self.outputs: list[Output] | None = None
        self.writes: list[TableWrite] | None = None
        self.done = False


class PartitionState:
    """Everything the worker tracks for one assigned topic-partition.

    ``next_commit`` is the offset to commit (completed contiguous prefix + 1), ``committed``
    what was last committed. ``buffered`` counts records handed to lanes but not yet taken by
    an agent; the worker pauses the partition when it passes the lane buffer bound.
    """

    __slots__ = (
        "buffered",
        "committed",
        "discarded",
        "fetched_to",
        "inflight",
        "next_commit",
        "partition",
        "paused",
        "ready",
        "release",
        "routes",
        "stall_probe",
        "stats",
        "stop_offset",
        "tables",
        "tasks",
        "topic",
    )

    def __init__(self, topic: str, partition: int, release: ReleaseFn, stats: WorkerStats) -> None:
        self.topic = topic
        self.partition = partition
        self.release = release
        self.stats = stats
        # Replays stop a partition here (exclusive); None: no end.
        self.stop_offset: int | None = None
        self.fetched_to = 0  # the offset after the last one fetched (replays only)
        self.stall_probe: Pending | None = None  # the head at the last stall check
        self.inflight: deque[Pending] = deque()
        self.next_commit: int | None = None
        self.committed: int | None = None
        self.buffered = 0
        self.paused = False
        self.discarded = False
        self.routes: list[list[Lane]] = []
        # Table partitions co-partitioned with this source partition, and whether they are
        # restored: lanes start their agents only once ``ready`` is set.
        self.tables: list[TablePartition] = []
        self.ready: asyncio.Event = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    @property
    def label(self) -> str:
        return f"{self.topic}[{self.partition}]"

    @property
    def lanes(self) -> list[Lane]:
        return [lane for lanes in self.routes for lane in lanes]

    def track(self, pending: Pending) -> None:
        """Register a dispatched record; records must be tracked in offset order."""
        self.inflight.append(pending)

    def skip(self, message: Message, outputs: list[Output] | None = None) -> None:
        """Record an offset that completes without reaching any agent (e.g. undecodable),
        with ``outputs`` (its dead letters) released in offset order."""
        pending = Pending(SKIPPED_EVENT, 0, message.offset() or 0, message)
        pending.outputs = outputs
        pending.done = True
        self.inflight.append(pending)
        self._advance()

    def complete(self, pending: Pending) -> None:
        """One agent finished ``pending``; when all have, advance the prefix."""
        pending.remaining -= 1
        if pending.remaining > 0:
            return
        pending.done = True
        if self.inflight and self.inflight[0] is pending:
            self._advance()

    def discard(self) -> None:
        """Its work was aborted: stop its lanes and never release anything more from it."""
        self.discarded = True
        for lane in self.lanes:
            lane.close()

    def _advance(self) -> None:
        if self.discarded:
            return
        inflight = self.inflight
        while inflight and inflight[0].done:
            head = inflight.popleft()
            if head.outputs:
                self.stats.outputs += len(head.outputs)
                self.release(head.outputs)
            if head.writes:
                for part, key, value, _, _ in head.writes:
                    part.release(key, value)
            self.next_commit = head.offset + 1


def format_partitions(partitions: Iterable[TopicPartition | PartitionState]) -> str:
    """``orders[0,1], words[3]``: how logs name a set of partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(
        f"{topic}[{','.join(map(str, sorted(parts)))}]" for topic, parts in sorted(by_topic.items())
    )


def report_stalls(states: Iterable[PartitionState], after: float) -> None:
    """Say so when a partition's oldest in-flight offset has not completed since the last
    check (``after`` seconds ago): its commits cannot advance past it (a stuck agent, not a
    quiet topic)."""
    for state in states:
        head = state.inflight[0] if state.inflight else None
        if head is not None and head is state.stall_probe:
            log.warning(
                "%s: offset %d has been in progress for over %.0fs, so commits of this "
                "partition cannot advance; an agent may be stuck on it (%d events waiting)",
                state.label,
                head.offset,
                after,
                len(state.inflight),
            )
        state.stall_probe = head
