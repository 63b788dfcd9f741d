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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, TopicPartition

from streamer._context import TableWrite
from streamer.events import Event, Headers
from streamer.kafka.backend import Message
from streamer.state.keyed import TablePartition

log = logging.getLogger("streamer.worker")

Output = tuple[str, bytes | None, bytes | None, Headers | None]
_NO_OUTPUTS: tuple[()] = ()


# Stands in for the event of an offset no lane ever sees (undecodable records).
SKIPPED_EVENT = Event(None, None, [], 0, "", -1, -1)


class WorkerStats:
    """Running totals of one worker (or one replay): records dispatched, outputs released,
    events an agent failed on, and times reading waited for a commit in flight (the outputs
    it held reached ``Committer``'s bound)."""

    __slots__ = ("errors", "held_back", "outputs", "records")

    def __init__(self) -> None:
        self.records = 0
        self.outputs = 0
        self.errors = 0
        self.held_back = 0


class Effects:
    """What one agent's attempt at one record (or one timer run) staged: its outputs and
    table writes. Each agent reading a record owns its own ``Effects`` (DESIGN §2 rule 10):
    undoing one agent's attempt never touches another's.

    It is also the delivery callback of its outputs (``on_delivery``): the producer reports
    a record the broker refused here, so the failure is traced back to the record and the
    agent that produced it, and handled by that agent's error policy (rule 11). With
    ``delivery.report.only.error`` it is only ever called for failures.

    ``alone`` asks the checkpoint to send its outputs in produce requests of their own: the
    broker refuses a whole request (all records of one partition's batch) for one record
    too large or invalid, so only a record produced alone can be told to be at fault.
    """

    __slots__ = (
        "alone",
        "dead_letter",
        "event",
        "offset",
        "outputs",
        "owner",
        "refusals",
        "writes",
    )

    def __init__(self, owner: str | None, event: Event | None, offset: int = -1) -> None:
        self.owner = owner  # the agent's name; None for a timer's sends
        # The record it belongs to (None outside any event). Not its Pending: a Pending
        # holds its effects, and a reference back would make a cycle per event that only
        # the garbage collector could free (measured: twice the CPU per record).
        self.event = event
        self.offset = offset
        # A list once something is staged; a Pending starts with the shared empty tuple.
        self.outputs: list[Output] | tuple[()] = []
        self.writes: list[TableWrite] | None = None
        self.dead_letter = False  # its outputs are dead letters (a refusal is then fatal)
        self.alone = False  # produce its outputs in requests of their own (see above)
        # Where refusals are reported: the committer's list, set when released.
        self.refusals: list[Refusal] | None = None

    def __call__(self, err: KafkaError | None, message: Message | None) -> None:
        if err is not None and self.refusals is not None:
            self.refusals.append((self, err, message.topic() if message is not None else None))

    def add_output(self, output: Output) -> None:
        """Stage one more output."""
        outputs = self.outputs
        if outputs:
            outputs.append(output)
        else:
            self.outputs = [output]

    def undo(self, owner: str | None = None) -> None:
        """Drop the outputs and undo the table writes, newest first (``owner`` is for
        :meth:`Pending.undo`'s sake; effects of one agent ignore it)."""
        self.outputs = []
        if self.writes:
            for write in reversed(self.writes):
                write.undo()
            self.writes = None


ReleaseFn = Callable[[Effects], None]
# An output the producer reported as failed: whose effects, the error, the topic if known.
Refusal = tuple[Effects, KafkaError, "str | None"]


# Failures the broker (or the producer, before sending) reports about one record itself:
# retrying the same record cannot succeed, so they are the failure of the agent that
# produced it (DESIGN §2 rule 11). Other delivery errors (timeouts, purges of an aborted
# transaction, transport) fail the checkpoint without blaming any agent.
REFUSED_CODES: frozenset[Any] = frozenset(
    getattr(KafkaError, name)
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "_MSG_SIZE_TOO_LARGE",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "INVALID_MSG",
        "CORRUPT_MESSAGE",
        "TOPIC_AUTHORIZATION_FAILED",
        "POLICY_VIOLATION",
        "TOPIC_EXCEPTION",
        "INVALID_TOPIC_EXCEPTION",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
        "_UNKNOWN_PARTITION",
        "_INVALID_ARG",
        "_VALUE_SERIALIZATION",
        "_KEY_SERIALIZATION",
    )
    if hasattr(KafkaError, name)
)


class Pending(Effects):
    """One record on its way through the agents of a partition.

    ``remaining`` counts the agents that have not completed it yet. A Pending is itself
    the :class:`Effects` of the first agent that stages something for it (its ``owner``,
    set then): a record read by one agent (the common case) costs one object, not two,
    and no list of effects. Further agents' effects go to ``effects``, one
    :class:`Effects` each. All are released together, in offset order, once every agent
    completed the record.
    """

    __slots__ = ("attempts", "done", "effects", "message", "remaining")

    event: Event  # always a record's (an Effects' may be None: a timer's sends)

    def __init__(self, event: Event, remaining: int, offset: int, message: Message) -> None:
        # Effects.__init__ inlined: this runs once per record. ``outputs`` starts as a
        # shared empty tuple (never appended to: see Effects.add_output) so a record with
        # no output allocates no list.
        self.owner: str | None = None
        self.event = event
        self.offset = offset
        self.outputs = _NO_OUTPUTS
        self.writes = None
        self.dead_letter = False
        self.alone = False
        self.refusals = None
        self.message = message  # the raw record, for dead letters
        self.attempts: dict[str, int] | None = None  # failed attempts per agent
        self.remaining = remaining
        self.effects: list[Effects] | None = None  # agents' effects beyond the owner's
        self.done = False

    def effects_of(self, owner: str) -> Effects:
        """``owner``'s effects for this record, created on first use."""
        mine = self.owner
        if mine is None or mine == owner:
            self.owner = owner
            return self
        effects = self.effects
        if effects is not None:
            for candidate in effects:
                if candidate.owner == owner:
                    return candidate
        found = Effects(owner, self.event, self.offset)
        found.alone = self.alone  # a suspect record's outputs all go alone
        if effects is None:
            self.effects = [found]
        else:
            effects.append(found)
        return found

    def undo(self, owner: str | None = None) -> None:
        """Drop ``owner``'s effects (its attempt failed); other agents' stay. (Without an
        owner: drop this Pending's own, as :meth:`Effects.undo`.)"""
        if owner is None or self.owner == owner:
            Effects.undo(self)
            self.owner = None
            return
        effects = self.effects
        if effects:
            for candidate in effects:
                if candidate.owner == owner:
                    candidate.undo()
                    effects.remove(candidate)
                    break

    def failed_attempts(self, owner: str) -> int:
        return 0 if self.attempts is None else self.attempts.get(owner, 0)

    def count_failure(self, owner: str) -> int:
        """One more failed attempt of ``owner`` on this record; returns the total."""
        if self.attempts is None:
            self.attempts = {}
        count = self.attempts.get(owner, 0) + 1
        self.attempts[owner] = count
        return count


class Route(Protocol):
    """One lane as the partition sees it (``streamer.worker.lanes.Lane`` is the one
    implementation; a protocol so this module does not import the lanes back)."""

    buffer: deque[Pending]  # records handed to it, not yet taken by its agent
    current: list[Pending]  # the record(s) its agent is processing
    due_at: float | None  # holding a delayed record until then
    closing: bool

    @property
    def appendable(self) -> bool:
        """True when the pump may append records to ``buffer`` itself (then wake the lane
        once per batch) instead of calling push(): lanes that act on push say False."""

    def push(self, pending: Pending) -> None: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...


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
        "holding",
        "inflight",
        "next_commit",
        "partition",
        "pause_at",
        "paused",
        "ready",
        "redelivered",
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
        # The offset after the last record dispatched (or where a rewind restarts it): a
        # record below it is never dispatched again while this worker owns the partition.
        self.fetched_to = 0
        self.redelivered = 0  # records the client handed out again, skipped
        self.stall_probe: Pending | None = None  # the head at the last stall check
        self.inflight: deque[Pending] = deque()
        self.next_commit: int | None = None
        self.committed: int | None = None
        self.buffered = 0
        # Records buffered in its lanes at which it pauses at the least (the worker's
        # lane_buffer is the other bound): two consume batches when it is assigned
        # (rebalance.PAUSE_FLOOR), raised by agents that take() big batches.
        self.pause_at = 0
        self.holding = 0  # lanes waiting for a delayed record to be due (not stalled)
        self.paused = False
        self.discarded = False
        self.routes: list[Sequence[Route]] = []
        # Table partitions co-partitioned with this source partition, and whether they are
        # restored: lanes start their agents only once ``ready`` is set.
        self.tables: list[TablePartition] = []
        self.ready: asyncio.Event = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    @property
    def label(self) -> str:
        return f"{self.topic}[{self.partition}]"

    @property
    def lanes(self) -> list[Route]:
        return [lane for lanes in self.routes for lane in lanes]

    def waiting_until_due(self) -> bool:
        """Every lane holds a delayed record until it is due, or has nothing to do."""
        return all(
            lane.due_at is not None or (not lane.buffer and not lane.current) for lane in self.lanes
        )

    def track(self, pending: Pending) -> None:
        """Register a dispatched record; records must be tracked in offset order."""
        self.inflight.append(pending)

    def skip(self, message: Message, effects: list[Effects] | None = None) -> None:
        """Record an offset that completes without reaching any agent (e.g. undecodable),
        with ``effects`` (its dead letters) released in offset order."""
        pending = Pending(SKIPPED_EVENT, 0, message.offset() or 0, message)
        pending.effects = effects or None
        pending.done = True
        self.inflight.append(pending)
        self.advance()

    def complete(self, pending: Pending) -> None:
        """One agent finished ``pending``; when all have, advance the prefix."""
        pending.remaining -= 1
        if pending.remaining > 0:
            return
        pending.done = True
        if self.inflight and self.inflight[0] is pending:
            self.advance()

    def discard(self) -> None:
        """Its checkpoint failed: stop its lanes and never release anything more from it.

        Nothing of the failed checkpoint may be committed later by another path (DESIGN §2
        rule 9): the commit position goes back to what Kafka holds, and the table writes
        released since are dropped (the partition is rewound and its tables restored)."""
        self.discarded = True
        self.next_commit = self.committed
        for part in self.tables:
            part.dirty.clear()
        for lane in self.lanes:
            lane.close()

    def advance(self) -> None:
        """Pop the done head of ``inflight`` and every done entry after it, releasing their
        effects and moving the commit position (call it when the head is done)."""
        if self.discarded:
            return
        inflight = self.inflight
        release = self.release
        while inflight and inflight[0].done:
            head = inflight.popleft()
            # The owner's effects are the Pending itself (see Pending).
            if head.outputs:
                self.stats.outputs += len(head.outputs)
                release(head)
            if head.writes:
                for write in head.writes:  # TableWrite.release() inlined: once per write
                    write.target.release(write.key, write.value)
            if head.effects:
                for effects in head.effects:
                    if effects.outputs:
                        self.stats.outputs += len(effects.outputs)
                        release(effects)
                    if effects.writes:
                        for write in effects.writes:
                            write.release()
            self.next_commit = head.offset + 1


def redelivered(state: PartitionState, offset: int) -> None:
    """The client handed out ``offset`` of ``state`` again (below :attr:`fetched_to`):
    count it, and say so for the first one of each ownership. Processing it again would
    apply its table writes twice under any guarantee (they are in the store already)."""
    state.redelivered += 1
    if state.redelivered == 1:
        log.warning(
            "%s: the Kafka client went back to offset %d after handing out up to %d; "
            "skipping the records it repeats (each is processed once)",
            state.label,
            offset,
            state.fetched_to - 1,
        )


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
        if head is not None and head is state.stall_probe and not state.holding:
            log.warning(
                "%s: offset %d has been in progress for over %.0fs, so commits of this "
                "partition cannot advance; an agent may be stuck on it (%d events waiting)",
                state.label,
                head.offset,
                after,
                len(state.inflight),
            )
        state.stall_probe = head
