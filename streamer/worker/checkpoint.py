"""Checkpoints: *how* the work of completed events becomes durable, per guarantee.

Whether and when a checkpoint commits is decided by one owner, the
:class:`~streamer.worker.committer.Committer`; a checkpoint only knows how, and reports a
failure by raising :class:`CheckpointFailed`, after which nothing of that checkpoint may be
committed by anyone (DESIGN §2 rule 9).

Outputs of completed events are handed to the producer as soon as they are released (in
offset order), each with its :class:`~streamer.worker.partition.Effects` as delivery
callback, so a record the broker refuses is traced back to the agent and event that
produced it (rule 11).

At-least-once (:class:`AtLeastOnceCheckpoint`), in this order:

1. flush the producer: every output is acknowledged, or the checkpoint fails;
2. produce one changelog record per table key changed by completed events, and flush
   (after the outputs: a checkpoint whose outputs failed writes no changelog);
3. commit, per partition, the completed contiguous prefix + 1 (each partition's result is
   checked: a partition the broker refused stays at its old offset);
4. write each table partition's changes to RocksDB in one WriteBatch with the changelog
   offset recovery resumes from.

Exactly-once: see :mod:`streamer.worker.transactions`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import KafkaOperationError
from streamer.kafka.backend import Consumer, Producer
from streamer.state.keyed import TablePartition
from streamer.threads import OnThread
from streamer.worker.partition import REFUSED_CODES, Effects, PartitionState, Refusal
from streamer.worker.probes import IDLE_TIMER, CommitTimer

__all__ = [
    "AtLeastOnceCheckpoint",
    "Checkpoint",
    "CheckpointFailed",
    "Due",
    "InFlightCommit",
    "Refusal",
]

log = logging.getLogger("streamer.checkpoint")

FLUSH_TIMEOUT = 30.0
# How long the event loop may wait for the producer to send what is queued before and after
# the outputs of a record suspected of a refusal (rare: a refusal was reported).
ALONE_FLUSH_TIMEOUT = 5.0
STUCK_GRACE = 15.0  # seconds past its own timeout before a blocked call is given up
# Under exactly-once (a commit every 0.1 s) a table partition's RocksDB is written at most
# once a second, or once this many committed keys wait: count_eos of ``python -m bench``
# spent a seventh of its loop writing RocksDB after every commit (10,000 keys: each key
# was written about six times a second, now once).
STORE_WRITE_INTERVAL = 1.0
UNAPPLIED_MAX = 50_000
Due = list[tuple[PartitionState, int]]
Changes = dict[bytes, bytes | None]


class CheckpointFailed(Exception):
    """The checkpoint cannot commit: everything it staged (outputs, changelog records,
    offsets) is dropped, and the worker must rewind or release its partitions.

    ``refusals`` are the outputs the producer reported as failed, with the effects they
    came from; ``fenced`` says the producer is unusable and must be replaced; ``fatal`` is
    an error that must stop the worker (a changelog or dead-letter record refused);
    ``unconfirmed`` says the commit was sent but never answered: the broker may still have
    committed it (then its work is not redone; exactly-once holds either way).
    """

    def __init__(
        self,
        reason: str,
        *,
        refusals: list[Refusal] | None = None,
        fenced: bool = False,
        fatal: BaseException | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refusals = refusals or []
        self.fenced = fenced
        self.fatal = fatal
        self.unconfirmed = False
        self.reported = False  # the worker handed its refusals to the agents' policies


class InFlightCommit:
    """The broker round trips of one checkpoint, running on a thread of their own while the
    event loop goes on processing (exactly-once: ``send_offsets_to_transaction`` and
    ``commit_transaction``). The loop finishes the checkpoint once :attr:`done`.

    ``due`` and ``written`` are what the checkpoint covers: offsets to record as committed
    and, per table partition, the changes taken out of its ``dirty`` when the commit began
    (writes released afterwards belong to the next checkpoint).
    """

    __slots__ = ("_round_trips", "deadline", "due", "started", "written")

    def __init__(
        self,
        work: Callable[[], None],
        due: Due,
        written: list[tuple[TablePartition, Changes]],
        deadline: float,
    ) -> None:
        self.due = due
        self.written = written
        self.deadline = deadline
        self.started = time.perf_counter()
        self._round_trips: OnThread[None] = OnThread(work, "streamer-commit")

    @property
    def done(self) -> bool:
        return self._round_trips.done

    def overdue(self, grace: float) -> bool:
        """Still running ``grace`` seconds past its deadline: the client is stuck."""
        return not self.done and time.monotonic() > self.deadline + grace

    def wait(self, grace: float, within: float | None = None) -> bool:
        """Block until it returned, at most until ``grace`` seconds past its deadline (and
        at most ``within`` seconds, if given); whether it returned."""
        wait = self.deadline + grace - time.monotonic()
        if within is not None:
            wait = min(wait, within)
        return self._round_trips.join(max(0.0, wait))

    def outcome(self) -> BaseException | None:
        """What the round trips raised (None: they succeeded). Only once :attr:`done`."""
        outcome = self._round_trips.outcome
        return outcome if isinstance(outcome, BaseException) else None


class Checkpoint:
    """What both guarantees share: releasing outputs, changelog records, RocksDB batches.

    A checkpoint whose :attr:`background` is True can also commit in two steps, so the
    event loop never waits on the broker: :meth:`begin_commit` on the loop thread (it stages
    what the checkpoint covers and starts the round trips on a thread), then
    :meth:`finish_commit` on the loop thread once they returned. Between the two the
    checkpoint must not be handed outputs (the committer holds them).
    """

    background = False

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        brokers: str,
        *,
        timer: CommitTimer = IDLE_TIMER,
        produced: dict[str, int] | None = None,
    ) -> None:
        """``timer`` times the commits; ``produced`` is the per-topic tally of released
        records to add to (the worker's metrics give both; a tally of its own otherwise)."""
        self._consumer = consumer
        self._producer = producer
        self._brokers = brokers
        self.timer = timer
        self.produced: dict[str, int] = defaultdict(int) if produced is None else produced
        # Outputs the producer reported as failed since the last checkpoint.
        self.refusals: list[Refusal] = []
        self._changelog_failures: list[tuple[KafkaError, str]] = []
        # The producer's fatal error, once a poll or flush raised it (see _unusable).
        self.broken: KafkaError | None = None

    def release(self, batch: list[Effects]) -> None:
        """Hand the outputs of completed events to the producer, in order. Never raises:
        a record the producer refuses at once is reported like a failed delivery, and the
        next checkpoint fails.

        Once a failed delivery was reported, events' outputs are not produced any more: the
        checkpoint fails and its events are processed again after the rewind, so their
        outputs would be duplicates under at-least-once (and aborted under exactly-once).
        A timer's sends (no owner) still are: no rewind runs the timer again."""
        produce, produced, refusals = self._producer.produce, self.produced, self.refusals
        for effects in batch:
            if refusals and effects.owner is not None:
                continue
            effects.refusals = refusals
            if effects.alone:
                self._release_alone(effects)
                continue
            for topic, key, value, headers in effects.outputs:
                produced[topic] += 1
                try:  # the hot path: one direct call per record
                    if headers is None:
                        produce(topic, value, key, on_delivery=effects)
                    else:
                        produce(topic, value, key, headers=headers, on_delivery=effects)
                except BufferError:
                    self._produce(topic, value, key, headers=headers, on_delivery=effects)
                except KafkaException as exc:
                    effects(_error(exc), None)

    def _release_alone(self, effects: Effects) -> None:
        """Produce the outputs of a record suspected of a refusal in produce requests of
        their own: the broker refuses a partition's whole batch for one bad record, so the
        records released before it are sent first, and its outputs are sent before any
        later one. A flush that times out (a broker away) lets them share a request after
        all, and a refusal then counts against this record even if another one caused it
        (``PartitionOwnership._blame`` cannot tell): only when the broker takes 5 s."""
        self._flush_quietly()
        for topic, key, value, headers in effects.outputs:
            self.produced[topic] += 1
            self._produce(topic, value, key, headers=headers, on_delivery=effects)
        self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self._producer.flush(ALONE_FLUSH_TIMEOUT)
        except KafkaException as exc:
            self._unusable(exc)

    def _produce(self, *args: Any, **kwargs: Any) -> None:
        """Produce, serving delivery reports while the producer's queue is full; a refusal
        is reported to the record's delivery callback, never raised."""
        while True:
            try:
                self._producer.produce(*args, **kwargs)
                return
            except BufferError:
                self.poll(0.05)
                if self.broken is not None:
                    kwargs["on_delivery"](self.broken, None)
                    return
            except KafkaException as exc:
                kwargs["on_delivery"](_error(exc), None)
                return

    def poll(self, timeout: float = 0) -> None:
        """Serve producer callbacks (without blocking, by default). Never raises: a fatal
        producer error is kept in :attr:`broken` and fails the next checkpoint."""
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            self._unusable(exc)

    def _unusable(self, exc: KafkaException) -> None:
        """confluent-kafka raises a producer's fatal error (fenced by a newer instance, or
        by the broker after a transaction timed out) from the next ``poll`` or ``flush``,
        once: keep it, so the checkpoint fails and the producer is replaced rather than the
        worker stopping on a raw exception."""
        err = _error(exc)
        if self.broken is None:
            log.warning("the producer failed fatally (%s); it is replaced at the next "
                        "checkpoint", err.str())  # fmt: skip
            self.broken = err

    def _broken_failure(self) -> CheckpointFailed:
        assert self.broken is not None
        return CheckpointFailed(
            f"the producer failed fatally ({self.broken.str()}); it is replaced",
            refusals=self._take_refusals(),
            fenced=True,
        )

    def commit(
        self,
        states: Iterable[PartitionState],
        timeout: float = FLUSH_TIMEOUT,
        grace: float = STUCK_GRACE,
    ) -> None:
        """Make the completed work of ``states`` durable: outputs, table changes, offsets,
        within ``timeout`` seconds; a client call blocked ``grace`` seconds past that is given
        up (see :attr:`CheckpointFailed.unconfirmed`). Raises :class:`CheckpointFailed`."""
        states = list(states)
        due, parts = self._work(states)
        if due or parts or self._pending_work():
            with self.timer:  # observes the duration, or counts the failure it raises
                self._commit(due, parts, states, time.monotonic() + timeout)

    @staticmethod
    def _work(states: list[PartitionState]) -> tuple[Due, list[TablePartition]]:
        """What a checkpoint of ``states`` covers: the offsets that moved, and the table
        partitions with released changes."""
        due: Due = [
            (state, state.next_commit)
            for state in states
            if state.next_commit is not None and state.next_commit != state.committed
        ]
        # Co-partitioned partitions of one number share their table partitions: once each.
        parts = list(dict.fromkeys(part for state in states for part in state.tables if part.dirty))
        return due, parts

    def begin_commit(
        self, states: Iterable[PartitionState], timeout: float = FLUSH_TIMEOUT
    ) -> InFlightCommit | None:
        """Start committing the completed work of ``states`` off the loop thread (only when
        :attr:`background`); None when there is nothing to commit. Raises
        :class:`CheckpointFailed` when it cannot even start."""
        raise NotImplementedError

    def finish_commit(self, commit: InFlightCommit) -> None:
        """Complete ``commit`` once it is done (or overdue). Raises CheckpointFailed."""
        raise NotImplementedError

    def _pending_work(self) -> bool:
        return bool(self.refusals) or self.broken is not None

    def _commit(
        self, due: Due, parts: list[TablePartition], states: list[PartitionState], deadline: float
    ) -> None:
        raise NotImplementedError

    def abort(self, reason: str) -> None:
        """Drop what is staged and not yet durable (only a transaction can)."""

    def _produce_changelogs(self, parts: list[TablePartition]) -> None:
        failures = self._changelog_failures  # this transaction's list (see _retire_reports)

        def reported(err: KafkaError | None, message: Any) -> None:
            if err is not None:
                topic = message.topic() if message is not None else "a changelog topic"
                failures.append((err, topic))

        produce = self._producer.produce
        for part in parts:
            topic, partition = part.table.changelog, part.partition
            for key, value in part.dirty.items():
                try:  # one direct call per changed key; the wrapper only when it is needed
                    produce(topic, value, key, partition, on_delivery=reported)
                except (BufferError, KafkaException):
                    self._produce(topic, value, key, partition, on_delivery=reported)

    def _retire_reports(self) -> None:
        """Give the records produced so far lists of their own to report failures to:
        after an abort their delivery reports are purges (``_PURGE_QUEUE``,
        ``_PURGE_INFLIGHT``), served during the abort or by a later poll, and must not fail
        the next checkpoint (they would, and its abort would purge the redone work's
        records: failure after failure). Records of the next transaction report to new
        lists; a record refused for itself is produced again by the redone work and
        refused again then."""
        self.refusals = []
        self._changelog_failures = []

    def _changelog_failure(self) -> CheckpointFailed | None:
        """The checkpoint fails when a changelog record failed. When the broker refused the
        record itself, table state can no longer be made durable, which retrying cannot
        fix: the failure is fatal and the worker stops."""
        if not self._changelog_failures:
            return None
        failures, self._changelog_failures = self._changelog_failures, []
        refused = [(err, topic) for err, topic in failures if err.code() in REFUSED_CODES]
        err, topic = (refused or failures)[0]
        reason = f"{len(failures)} changelog record(s) failed (first: {topic}: {err.str()})"
        if not refused:
            return CheckpointFailed(reason, refusals=self._take_refusals())
        error = KafkaOperationError(
            f"{topic} refused {len(refused)} changelog record(s) ({err.str()}); table state "
            "cannot be made durable, so the worker stops (check the changelog topic's "
            "configuration)"
        )
        return CheckpointFailed(reason, refusals=self._take_refusals(), fatal=error)

    def _take_refusals(self) -> list[Refusal]:
        refusals = list(self.refusals)
        self.refusals.clear()
        return refusals

    def _flush(self, deadline: float, what: str) -> None:
        timeout = max(0.0, deadline - time.monotonic())
        try:
            remaining = self._producer.flush(timeout)
        except KafkaException as exc:
            self._unusable(exc)
        if self.broken is not None:
            raise self._broken_failure()
        if remaining:
            raise CheckpointFailed(
                f"{remaining} {what} record(s) not acknowledged by {self._brokers} within "
                f"{timeout:.0f}s",
                refusals=self._take_refusals(),
            )

    @staticmethod
    def _take_dirty(parts: list[TablePartition]) -> list[tuple[TablePartition, Changes]]:
        """Take each partition's released changes for this checkpoint; writes released
        from now on start a fresh ``dirty`` (the next checkpoint's)."""
        taken = []
        for part in parts:
            taken.append((part, part.dirty))
            part.dirty = {}
        return taken

    @staticmethod
    def _apply_tables(
        taken: list[tuple[TablePartition, Changes]],
        markers: int,
        source: dict[int, int],
        every: float = 0.0,
    ) -> None:
        """Write what the changelog now holds to RocksDB, with the offset to resume from.

        ``markers`` is the number of transaction markers each written changelog partition
        gained (1 under exactly-once, 0 otherwise): recovery must start after them.
        ``every``: write a table partition's RocksDB at most that often (seconds), holding
        its committed writes in :attr:`TablePartition.unapplied` meanwhile; a partition
        that stops changing keeps them until it is closed (a crash then restores them from
        the changelog).
        """
        now = time.monotonic()
        for part, written in taken:
            part.changelog_end += len(written) + markers
            if part.partition in source:
                part.source_offset = source[part.partition]
            if part.unapplied:
                part.unapplied.update(written)
            else:  # the common case: taken from ``dirty``, nothing else holds it
                part.unapplied = written
            if now >= part.applied_at + every or len(part.unapplied) >= UNAPPLIED_MAX:
                part.persist(now)

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        try:
            self._producer.flush(timeout)
        except KafkaException as exc:  # a producer that failed fatally delivers nothing more
            log.debug("flushing the producer on close: %s", exc)


class AtLeastOnceCheckpoint(Checkpoint):
    """Flush, then commit offsets: a crash at any point loses nothing, may repeat some."""

    def _commit(
        self, due: Due, parts: list[TablePartition], states: list[PartitionState], deadline: float
    ) -> None:
        if self.broken is not None:
            raise self._broken_failure()
        self._flush(deadline, "output")
        if self.refusals:
            refusals = self._take_refusals()
            first = refusals[0][1].str()
            raise CheckpointFailed(
                f"{len(refusals)} output record(s) could not be delivered (first: {first})",
                refusals=refusals,
            )
        if parts:
            self._produce_changelogs(parts)
            self._flush(deadline, "changelog")
            failed = self._changelog_failure()
            if failed is not None:
                raise failed
        committed = self._commit_offsets(due) if due else {}
        # The changelog holds these changes whatever happened to the offsets: the local
        # store mirrors the changelog.
        self._apply_tables(self._take_dirty(parts), 0, committed)

    def _commit_offsets(self, due: Due) -> dict[int, int]:
        """Commit ``due``; returns the offsets committed, by partition of the tables' source.
        A refused commit (typically a rebalance in progress) is not a failed checkpoint:
        everything is durable, the offsets move at the next one (or the next owner repeats
        some events, which at-least-once allows)."""
        offsets = [TopicPartition(s.topic, s.partition, offset) for s, offset in due]
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit of %d partition(s) failed, retrying later: %s", len(offsets), exc)
            self.timer.failed("offset_commit_refused")
            return {}
        refused = {
            (tp.topic, tp.partition): tp.error for tp in results or [] if tp.error is not None
        }
        committed: dict[int, int] = {}
        for state, offset in due:
            error = refused.get((state.topic, state.partition))
            if error is not None:
                log.warning("commit of %s refused, retrying later: %s", state.label, error)
                self.timer.failed("offset_commit_refused")
                continue
            state.committed = offset
            committed[state.partition] = offset
        return committed


def _error(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err
    return KafkaError(KafkaError._FAIL, str(exc))
