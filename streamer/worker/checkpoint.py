"""The checkpoint: the one place that decides when offsets are committed.

Outputs of completed events are handed to the producer as soon as they are released (in
offset order); the checkpoint, every ``commit_interval``, on revoke and on stop, makes them
durable together with the table changes and the source offsets, in a fixed order.

At-least-once (:class:`AtLeastOnceCheckpoint`):

1. produce one changelog record per table key changed by completed events;
2. flush the producer: every output and changelog record is acknowledged;
3. stop if any delivery failed (the offsets stay uncommitted, the events run again);
4. commit, per partition, the completed contiguous prefix + 1;
5. write each table partition's changes to RocksDB in one WriteBatch with the changelog
   offset recovery resumes from.

Exactly-once (:class:`ExactlyOnceCheckpoint`, KIP-447): released outputs go into the open
transaction; the checkpoint produces the changelog records, sends the offsets with the
consumer's group metadata, commits the transaction, and only then writes RocksDB.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from streamer.errors import KafkaOperationError
from streamer.kafka.backend import Consumer, Producer
from streamer.metrics import IDLE_TIMER
from streamer.state.store import CHANGELOG_OFFSET, SOURCE_OFFSET
from streamer.state.table import TablePartition
from streamer.worker.partition import Output, PartitionState

log = logging.getLogger("streamer.checkpoint")

FLUSH_TIMEOUT = 30.0
Due = list[tuple[PartitionState, int]]


class TransactionAborted(Exception):
    """The open transaction was aborted: every owned partition must rewind to its committed
    offset and drop what it holds (raised by the exactly-once checkpoint; internal)."""


class Checkpoint:
    """What both guarantees share: releasing outputs, changelog records, RocksDB batches."""

    def __init__(self, consumer: Consumer, producer: Producer, brokers: str) -> None:
        self._consumer = consumer
        self._producer = producer
        self._brokers = brokers
        self.timer = IDLE_TIMER  # WorkerMetrics.watch() sets both: commit timing, and
        self.produced: dict[str, int] = defaultdict(int)  # records released per topic

    def release(self, outputs: list[Output]) -> None:
        """Hand the outputs of completed events to the producer, in order. Never raises
        a Kafka error: those surface at the next commit, the one place that handles them."""
        produce, produced = self._producer.produce, self.produced
        for topic, key, value, headers in outputs:
            produced[topic] += 1
            try:  # the hot path: one direct call per record
                produce(topic, value, key, headers=headers)
            except BufferError:
                self._produce(produce, topic, value, key, headers=headers)

    def _produce(self, produce: Any, *args: Any, **kwargs: Any) -> None:
        while True:
            try:
                produce(*args, **kwargs)
                return
            except BufferError:
                # The producer's queue is full: serve delivery reports until it drains.
                self._producer.poll(0.05)

    def poll(self) -> None:
        """Serve producer callbacks without blocking."""
        self._producer.poll(0)

    def commit(self, states: Iterable[PartitionState]) -> None:
        """Make the completed work of ``states`` durable: outputs, table changes, offsets."""
        states = list(states)
        due: Due = [
            (state, state.next_commit)
            for state in states
            if state.next_commit is not None and state.next_commit != state.committed
        ]
        parts = [part for state in states for part in state.tables if part.dirty]
        if due or parts or self._pending_work():
            with self.timer:  # observes the duration, or counts the failure it raises
                self._commit(due, parts)

    def _pending_work(self) -> bool:
        return False

    def _commit(self, due: Due, parts: list[TablePartition]) -> None:
        raise NotImplementedError

    def _produce_changelogs(self, parts: list[TablePartition], **kwargs: Any) -> None:
        produce = self._producer.produce
        for part in parts:
            topic, partition = part.table.changelog, part.partition
            for key, value in part.dirty.items():
                self._produce(produce, topic, value, key, partition, **kwargs)

    @staticmethod
    def _apply_tables(parts: list[TablePartition], markers: int, source: dict[int, int]) -> None:
        """Write what the changelog now holds to RocksDB, with the offset to resume from.

        ``markers`` is the number of transaction markers each written changelog partition
        gained (1 under exactly-once, 0 otherwise): recovery must start after them.
        """
        for part in parts:
            written, part.dirty = part.dirty, {}
            part.changelog_end += len(written) + markers
            meta = {CHANGELOG_OFFSET: part.changelog_end}
            if part.partition in source:
                meta[SOURCE_OFFSET] = source[part.partition]
            part.store.apply(written, meta)
            part.checkpointed(written)

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT)


class AtLeastOnceCheckpoint(Checkpoint):
    """Flush, then commit offsets: a crash at any point loses nothing, may repeat some."""

    def __init__(self, consumer: Consumer, producer: Producer, brokers: str) -> None:
        super().__init__(consumer, producer, brokers)
        self._delivery_failures: list[str] = []

    def _on_delivery(self, err: Any, message: Any) -> None:
        # Called only for failures (delivery.report.only.error).
        if err is not None:
            self._delivery_failures.append(f"{message.topic()}: {err.str()}")

    def release(self, outputs: list[Output]) -> None:
        produce, on_delivery = self._producer.produce, self._on_delivery
        produced = self.produced
        for topic, key, value, headers in outputs:
            produced[topic] += 1
            try:  # the hot path: one direct call per record
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:
                self._produce(produce, topic, value, key, headers=headers, on_delivery=on_delivery)

    def _commit(self, due: Due, parts: list[TablePartition]) -> None:
        self._produce_changelogs(parts, on_delivery=self._on_delivery)
        remaining = self._producer.flush(FLUSH_TIMEOUT)
        if remaining:
            raise KafkaOperationError(
                f"{remaining} output record(s) not acknowledged by {self._brokers} within "
                f"{FLUSH_TIMEOUT:.0f}s; offsets not committed (the events will be processed again)"
            )
        if self._delivery_failures:
            first, count = self._delivery_failures[0], len(self._delivery_failures)
            self._delivery_failures.clear()
            raise KafkaOperationError(
                f"{count} output record(s) could not be delivered (first: {first}); "
                "offsets not committed (the events will be processed again)"
            )
        committed = self._commit_offsets(due) if due else False
        # The changelog holds these changes whatever happened to the commit: the local
        # store mirrors the changelog.
        source = {s.partition: offset for s, offset in due} if committed else {}
        self._apply_tables(parts, 0, source)

    def _commit_offsets(self, due: Due) -> bool:
        offsets = [TopicPartition(s.topic, s.partition, offset) for s, offset in due]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance in progress: the next checkpoint (or the new owner)
            # commits; nothing is lost, at worst processed twice.
            log.warning("commit of %d partition(s) failed, retrying later: %s", len(offsets), exc)
            self.timer.failed("offset_commit_refused")
            return False
        for state, offset in due:
            state.committed = offset
        return True
