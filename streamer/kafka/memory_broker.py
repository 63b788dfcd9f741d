"""The in-memory broker itself: topics of partitioned records, committed offsets and
transactions (see :mod:`streamer.kafka.memory` for what is modelled and the clients on it).
Apart from the clients so the consumer module can build on it without importing them."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

from streamer.events import Headers

SCHEME = "memory://"  # only a label: what a driven app's settings show as its brokers
NO_OFFSET = -1001  # what confluent-kafka reports for "no committed offset"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit
    int; the partition of a keyed record is ``(murmur2(key) & 0x7fffffff) % partitions``."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Record:
    """One stored record. ``control`` records are transaction markers: they take an offset
    and are never returned to consumers."""

    key: bytes | None
    value: bytes | None
    headers: Headers | None
    timestamp: int
    offset: int
    seq: int = 0  # global append order, for reading a topic back in production order
    control: bool = False


class Message:
    """A consumed record (or a partition-EOF event), shaped like confluent_kafka.Message."""

    __slots__ = ("_error", "_partition", "_record", "_topic")

    def __init__(
        self, topic: str, partition: int, record: Record, error: KafkaError | None = None
    ) -> None:
        self._topic, self._partition, self._record, self._error = topic, partition, record, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._record.offset

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes | None:
        return self._record.value

    def headers(self) -> Headers | None:
        return self._record.headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._record.timestamp)  # 1: TIMESTAMP_CREATE_TIME


class MemoryBroker:
    """Topics, partitions, committed offsets and transactions, in memory.

    ``clock`` gives the create-time of records produced without a timestamp (the driver
    passes its simulated clock's ``time``).
    """

    def __init__(self, name: str, *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.clock = clock
        self.lock = threading.RLock()
        self.topics: dict[str, list[list[Record]]] = {}
        self.topic_ids: dict[str, str] = {}  # a new id each time a name is created
        self.committed: dict[tuple[str, str, int], int] = {}  # (group, topic, partition)
        # The one member of each group that has joined, and its assignment.
        self.members: dict[str, tuple[str, list[tuple[str, int]]]] = {}
        self._seq = itertools.count()
        self._round_robin = itertools.count()

    @property
    def address(self) -> str:
        """``memory://NAME``: a label for messages, not an address anything resolves."""
        return SCHEME + self.name

    def create_topic(self, name: str, partitions: int) -> bool:
        """Create ``name`` with ``partitions``; False when it exists already."""
        with self.lock:
            if name in self.topics:
                return False
            self.topics[name] = [[] for _ in range(partitions)]
            self.topic_ids[name] = uuid.uuid4().hex
            return True

    def partition_of(self, topic: str, key: bytes | None, partition: int) -> int:
        """Where a record goes: ``partition`` if given (>= 0), else murmur2 of the key,
        else round-robin."""
        count = len(self.topics[topic])
        if partition >= 0:
            if partition >= count:
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
            return partition
        if key is None:
            return next(self._round_robin) % count
        return partition_for(key, count)

    def append(self, topic: str, partition: int, record: Record) -> int:
        """Append ``record`` (its offset and sequence are set here); returns the offset."""
        with self.lock:
            log = self.topics[topic][partition]
            record.offset = len(log)
            record.seq = next(self._seq)
            log.append(record)
            return record.offset

    def end(self, topic: str, partition: int) -> int:
        with self.lock:
            return len(self.topics[topic][partition])

    def data_end(self, topic: str, partition: int) -> int:
        """One past the last data (non-marker) record: where a consumer group that processed
        everything has committed."""
        with self.lock:
            for record in reversed(self.topics[topic][partition]):
                if not record.control:
                    return record.offset + 1
            return 0

    def records(self, topic: str) -> list[tuple[int, Record]]:
        """Every visible record of ``topic`` as (partition, record), in production order."""
        with self.lock:
            found = [(p, r) for p, log in enumerate(self.topics.get(topic, [])) for r in log]
        return sorted(((p, r) for p, r in found if not r.control), key=lambda item: item[1].seq)
