"""The in-memory consumer: every Consumer call the worker, recovery, standby and metrics make,
over a :class:`~streamer.kafka.memory.MemoryBroker` (see that module for what is modelled).

Contract kept from librdkafka: rebalance callbacks run inside ``consume``/``poll`` (and
``close``), on the caller's thread; ``consume(n, 0)`` never blocks; positions start at the
group's committed offset, else at ``auto.offset.reset``; transaction markers take offsets
but are never returned (so offsets have gaps, as on a real broker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

from streamer.kafka.memory_broker import NO_OFFSET, MemoryBroker, Message, Record

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]

_IDLE_WAIT = 0.001  # the most an empty consume/poll with a timeout blocks (seconds)


class MemoryConsumer:
    """A single-member consumer group (or a plain assigned consumer) on a memory broker."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._group = str(config.get("group.id", ""))
        self._eof = bool(config.get("enable.partition.eof", False))
        self._reset = str(config.get("auto.offset.reset", "latest"))
        self._topics: list[str] = []
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._joined = False
        self._positions: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._eof_sent: set[tuple[str, int]] = set()
        self.turns = 0  # consume/poll calls: the driver counts the worker's pump turns
        self._member_id = f"memory-{id(self):x}"

    # -- membership ------------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Join the group; the assignment (every partition) comes at the next consume/poll.
        ``on_lost`` is accepted and never called: a single member loses nothing."""
        self._topics = list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def _join(self) -> None:
        if self._joined or not self._topics:
            return
        self._joined = True
        with self._broker.lock:
            assigned = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in range(len(self._broker.topics.get(topic, [])))
            ]
            for tp in assigned:
                self._positions[(tp.topic, tp.partition)] = self._start(tp.topic, tp.partition)
            self._broker.members[self._group] = (
                self._member_id,
                [(tp.topic, tp.partition) for tp in assigned],
            )
        if self._on_assign is not None:
            self._on_assign(self, assigned)

    def _start(self, topic: str, partition: int) -> int:
        committed = self._broker.committed.get((self._group, topic, partition))
        if committed is not None:
            return committed
        return (
            0
            if self._reset in ("earliest", "smallest", "beginning")
            else self._end(topic, partition)
        )

    def _end(self, topic: str, partition: int) -> int:
        return self._broker.end(topic, partition)

    def _resolve(self, tp: TopicPartition) -> int:
        if tp.offset == OFFSET_BEGINNING:
            return 0
        if tp.offset == OFFSET_END:
            return self._end(tp.topic, tp.partition)
        if tp.offset < 0:
            return self._start(tp.topic, tp.partition)
        return int(tp.offset)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Replace the assignment (no group membership, no callbacks)."""
        self._positions = {(tp.topic, tp.partition): self._resolve(tp) for tp in partitions}
        self._eof_sent.clear()

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads."""
        return [TopicPartition(topic, partition) for topic, partition in self._positions]

    def close(self) -> None:
        """Leave the group: ``on_revoke`` with every assigned partition, then forget them."""
        if self._joined and self._on_revoke is not None and self._positions:
            revoked = [TopicPartition(t, p) for t, p in self._positions]
            self._on_revoke(self, revoked)
        if self._joined:
            with self._broker.lock:
                if self._broker.members.get(self._group, ("",))[0] == self._member_id:
                    del self._broker.members[self._group]
        self._joined = False
        self._topics = []
        self._positions.clear()

    # -- fetching --------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        """Up to ``num_messages`` records of the unpaused assigned partitions, partition by
        partition; blocks at most a millisecond when there are none."""
        self.turns += 1
        self._join()
        out: list[Message] = []
        with self._broker.lock:
            for where, position in list(self._positions.items()):
                if len(out) >= num_messages:
                    break
                if where in self._paused:
                    continue
                topic, partition = where
                log = self._broker.topics[topic][partition]
                taken = False
                while position < len(log) and len(out) < num_messages:
                    record = log[position]
                    position += 1
                    if not record.control:
                        out.append(Message(topic, partition, record))
                        taken = True
                self._positions[where] = position
                if taken:
                    self._eof_sent.discard(where)
                at_end = position >= len(log) and where not in self._eof_sent
                if self._eof and at_end and len(out) < num_messages:
                    self._eof_sent.add(where)
                    eof = KafkaError(KafkaError._PARTITION_EOF)
                    out.append(
                        Message(topic, partition, Record(None, None, None, 0, position), eof)
                    )
        if not out and timeout and timeout > 0:
            time.sleep(min(timeout, _IDLE_WAIT))
        return out

    def poll(self, timeout: float = -1) -> Message | None:
        messages = self.consume(1, timeout)
        return messages[0] if messages else None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        where = (partition.topic, partition.partition)
        self._positions[where] = self._resolve(partition)
        self._eof_sent.discard(where)

    # -- offsets ---------------------------------------------------------------------------

    def commit(
        self,
        message: Any = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition]:
        """Commit ``offsets`` (explicit offsets only: streamer never commits positions)."""
        with self._broker.lock:
            for tp in offsets or []:
                self._broker.committed[(self._group, tp.topic, tp.partition)] = tp.offset
        return list(offsets or [])

    def committed(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        with self._broker.lock:
            return [
                TopicPartition(
                    tp.topic,
                    tp.partition,
                    self._broker.committed.get((self._group, tp.topic, tp.partition), NO_OFFSET),
                )
                for tp in partitions
            ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), NO_OFFSET)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return 0, self._end(partition.topic, partition.partition)

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        """Per partition, the first offset whose record's timestamp is at or after the
        requested one (``partition.offset``, ms); -1 when every record is older."""
        found = []
        with self._broker.lock:
            for tp in partitions:
                log = self._broker.topics[tp.topic][tp.partition]
                offset = next(
                    (r.offset for r in log if not r.control and r.timestamp >= tp.offset), -1
                )
                found.append(TopicPartition(tp.topic, tp.partition, offset))
        return found

    def consumer_group_metadata(self) -> str:
        """The group id: what the memory producer's ``send_offsets_to_transaction`` needs."""
        return self._group
