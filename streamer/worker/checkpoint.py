"""The checkpoint: the one place that decides when offsets are committed.

At-least-once, in this fixed order (DESIGN §2):

1. released outputs were handed to the producer as their events completed (``release``);
2. produce one changelog record per table key changed by completed events (latest value,
   or a tombstone);
3. flush the producer, so every output and changelog record is acknowledged by Kafka;
4. stop if any delivery failed (the offsets stay uncommitted and are processed again);
5. commit, per partition, the completed contiguous prefix + 1;
6. write each table partition's changes to RocksDB in one WriteBatch with the changelog
   offset that recovery resumes from.

A crash before step 5 loses nothing: the events are consumed again. A crash between 5 and 6
leaves RocksDB behind its changelog, and recovery replays the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streamer.errors import KafkaOperationError
from streamer.state.store import CHANGELOG_OFFSET
from streamer.state.table import TablePartition
from streamer.worker.partition import Output, PartitionState

log = logging.getLogger("streamer.checkpoint")

FLUSH_TIMEOUT = 30.0


class AtLeastOnceCheckpoint:
    """Owns the producer's released outputs and the consumer's commits."""

    def __init__(self, consumer: Consumer, producer: Producer, brokers: str) -> None:
        self._consumer = consumer
        self._producer = producer
        self._brokers = brokers
        self._delivery_failures: list[str] = []
        self.commits = 0

    def _on_delivery(self, err: Any, message: Any) -> None:
        # Called only for failures (delivery.report.only.error).
        if err is not None:
            self._delivery_failures.append(f"{message.topic()}: {err.str()}")

    def release(self, outputs: list[Output]) -> None:
        """Hand the outputs of completed events to the producer, in order."""
        produce = self._producer.produce
        on_delivery = self._on_delivery
        for topic, key, value, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    # The producer's queue is full: serve delivery reports until it drains.
                    self._producer.poll(0.05)

    def poll(self) -> None:
        """Serve producer callbacks without blocking."""
        self._producer.poll(0)

    def commit(self, states: Iterable[PartitionState]) -> None:
        """Commit the completed prefix of ``states`` once their outputs are acknowledged."""
        states = list(states)
        due = [
            (state, state.next_commit)
            for state in states
            if state.next_commit is not None and state.next_commit != state.committed
        ]
        parts = [part for state in states for part in state.tables if part.dirty]
        if not due and not parts:
            return
        self._produce_changelogs(parts)
        remaining = self._producer.flush(FLUSH_TIMEOUT)
        if remaining:
            raise KafkaOperationError(
                f"{remaining} output record(s) not acknowledged by {self._brokers} within "
                f"{FLUSH_TIMEOUT:.0f}s; offsets not committed (the events will be processed again)"
            )
        if self._delivery_failures:
            first = self._delivery_failures[0]
            count = len(self._delivery_failures)
            self._delivery_failures.clear()
            raise KafkaOperationError(
                f"{count} output record(s) could not be delivered (first: {first}); "
                "offsets not committed (the events will be processed again)"
            )
        if due:
            self._commit_offsets(due)
        # The changelog holds these changes now, whatever happened to the commit: the local
        # store mirrors the changelog.
        for part in parts:
            written, part.dirty = part.dirty, {}
            part.changelog_end += len(written)
            part.store.apply(written, {CHANGELOG_OFFSET: part.changelog_end})
            part.checkpointed(written)

    def _produce_changelogs(self, parts: list[TablePartition]) -> None:
        produce = self._producer.produce
        for part in parts:
            topic, partition = part.table.changelog, part.partition
            for key, value in part.dirty.items():
                while True:
                    try:
                        produce(topic, value, key, partition, on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self._producer.poll(0.05)

    def _commit_offsets(self, due: list[tuple[PartitionState, int]]) -> None:
        offsets = [TopicPartition(s.topic, s.partition, offset) for s, offset in due]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance in progress: the next checkpoint (or the new owner)
            # commits; nothing is lost, at worst processed twice.
            log.warning("commit of %d partition(s) failed, retrying later: %s", len(offsets), exc)
            return
        for state, offset in due:
            state.committed = offset
        self.commits += 1

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT)
