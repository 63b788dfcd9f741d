"""An in-memory Kafka: the consumer, producer and admin surface the worker uses, with no broker.

``streamer.testing.TestDriver`` runs the *same* worker over these classes (DESIGN §4): the
worker cannot tell them from confluent-kafka's clients for what it calls (the Protocols of
:mod:`streamer.kafka.backend`). A :class:`MemoryBackend` builds clients on one
:class:`MemoryBroker`, given explicitly: ``Worker(app, backend=MemoryBackend(broker))``.

What is modelled: topics of partitions of records with offsets; committed offsets per group;
keyed records partitioned by Java-compatible murmur2 (so a key lands where a JVM producer or
``partitioner=murmur2_random`` would put it), ``None`` keys round-robin; transactional
producers whose records become visible at commit (followed by one invisible marker offset,
as on a real broker) and are dropped on abort, with offsets sent to the transaction
committed with it. A group has a single member: it gets every partition of its subscription
on its first ``consume``/``poll`` (and ``describe_consumer_groups`` shows it). Not modelled:
rebalances between members, retention, compaction, replication, network failure.

Every method is thread-safe (one lock per broker): recovery reads changelogs from a worker
thread. No method blocks longer than a millisecond.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamer.clock import to_millis
from streamer.events import Headers

if TYPE_CHECKING:
    from streamer.kafka.memory_consumer import MemoryConsumer

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


@dataclass
class _PartitionMeta:
    leader: int = 0  # the one broker


@dataclass
class _TopicMeta:
    partitions: dict[int, _PartitionMeta]
    error: KafkaError | None = None


@dataclass
class _ClusterMeta:
    topics: dict[str, _TopicMeta] = field(default_factory=dict)


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


class MemoryAdmin:
    """The AdminClient calls streamer makes (the :class:`~streamer.kafka.backend.Admin`
    Protocol)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMeta:
        with self._broker.lock:
            return _ClusterMeta(
                {
                    name: _TopicMeta({p: _PartitionMeta() for p in range(len(parts))})
                    for name, parts in self._broker.topics.items()
                }
            )

    def create_topics(self, new_topics: Iterable[Any], **_: Any) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for spec in new_topics:
            future: Future[None] = Future()
            if self._broker.create_topic(spec.topic, spec.num_partitions):
                future.set_result(None)
            else:
                future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)))
            futures[spec.topic] = future
        return futures

    def delete_topics(self, topics: list[str], **_: Any) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        with self._broker.lock:
            for name in topics:
                future: Future[None] = Future()
                self._broker.topic_ids.pop(name, None)
                if self._broker.topics.pop(name, None) is None:
                    future.set_exception(KafkaException(_unknown_topic()))
                else:
                    future.set_result(None)
                futures[name] = future
        return futures

    def describe_topics(self, topics: Any, **_: Any) -> dict[str, Future[Any]]:
        """Each topic's id (``TopicCollection`` in, as confluent-kafka takes it)."""
        futures: dict[str, Future[Any]] = {}
        with self._broker.lock:
            for name in topics.topic_names:
                future: Future[Any] = Future()
                topic_id = self._broker.topic_ids.get(name)
                if topic_id is None:
                    future.set_exception(KafkaException(_unknown_topic()))
                else:
                    future.set_result(SimpleNamespace(name=name, topic_id=topic_id))
                futures[name] = future
        return futures

    def describe_consumer_groups(self, group_ids: list[str], **_: Any) -> dict[str, Future[Any]]:
        """Each group's single member (if it joined) and its assignment."""
        from confluent_kafka import ConsumerGroupState

        futures: dict[str, Future[Any]] = {}
        with self._broker.lock:
            for group in group_ids:
                future: Future[Any] = Future()
                joined = self._broker.members.get(group)
                if joined is None:
                    future.set_exception(KafkaException(KafkaError(KafkaError.GROUP_ID_NOT_FOUND)))
                else:
                    member_id, assigned = joined
                    partitions = [TopicPartition(t, p) for t, p in assigned]
                    member = _Member(member_id, member_id, "memory", None, _Assignment(partitions))
                    future.set_result(_GroupDescription(group, ConsumerGroupState.STABLE, [member]))
                futures[group] = future
        return futures

    def alter_consumer_group_offsets(self, requests: list[Any], **_: Any) -> dict[str, Future[Any]]:
        futures: dict[str, Future[Any]] = {}
        with self._broker.lock:
            for request in requests:
                for tp in request.topic_partitions:
                    self._broker.committed[(request.group_id, tp.topic, tp.partition)] = tp.offset
                future: Future[Any] = Future()
                future.set_result(request)
                futures[request.group_id] = future
        return futures


@dataclass
class _Assignment:
    topic_partitions: list[TopicPartition]


@dataclass
class _Member:
    member_id: str
    client_id: str
    host: str
    group_instance_id: str | None
    assignment: _Assignment


@dataclass
class _GroupDescription:
    group_id: str
    state: Any
    members: list[_Member]


class MemoryBackend:
    """Builds clients on ``broker`` (the :class:`~streamer.kafka.backend.Backend` Protocol);
    connection options in a client's configuration are ignored."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def consumer(self, config: dict[str, Any]) -> MemoryConsumer:
        from streamer.kafka.memory_consumer import MemoryConsumer

        return MemoryConsumer(self.broker, config)

    def producer(self, config: dict[str, Any]) -> MemoryProducer:
        return MemoryProducer(self.broker, config)

    def admin(self, config: dict[str, Any]) -> MemoryAdmin:
        return MemoryAdmin(self.broker)

    def check_reachable(self, admin: Any, brokers: str, timeout: float = 10.0) -> None:
        """Always reachable: the broker is in this process."""

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"

    @property
    def name(self) -> str:
        return self.broker.name


def _unknown_topic() -> KafkaError:
    return KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)


class MemoryProducer:
    """The Producer calls streamer makes. Without ``transactional.id`` a record is visible
    as soon as it is produced; with one, at ``commit_transaction``."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._transactional = "transactional.id" in config
        self._in_txn = False
        self._pending: list[tuple[str, int, Record]] = []
        self._offsets: list[tuple[str, list[TopicPartition]]] = []
        self._reports: list[tuple[Callable[..., Any], KafkaError, Message]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        *,
        on_delivery: Callable[..., Any] | None = None,
        headers: Headers | None = None,
        timestamp: int = 0,
        **_: Any,
    ) -> None:
        broker = self._broker
        ts = timestamp or to_millis(broker.clock())
        record = Record(key, value, list(headers) if headers else None, ts, -1)
        with broker.lock:
            if topic not in broker.topics:
                # A real producer reports this through the delivery callback, not at once.
                if on_delivery is not None:
                    self._reports.append(
                        (on_delivery, _unknown_topic(), Message(topic, -1, record))
                    )
                return
            where = broker.partition_of(topic, key, partition)
            if self._transactional:
                if not self._in_txn:
                    raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
                self._pending.append((topic, where, record))
            else:
                broker.append(topic, where, record)

    def poll(self, timeout: float = 0) -> int:
        """Serve the delivery callbacks of failed records (successes are not reported, as
        with ``delivery.report.only.error``)."""
        reports, self._reports = self._reports, []
        for callback, error, message in reports:
            callback(error, message)
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        self.poll(0)
        return 0

    def __len__(self) -> int:
        return 0

    # -- transactions --------------------------------------------------------------------

    def init_transactions(self, timeout: float = -1) -> None:
        if not self._transactional:
            raise KafkaException(KafkaError(KafkaError._NOT_CONFIGURED))

    def begin_transaction(self) -> None:
        if self._in_txn:
            raise KafkaException(KafkaError(KafkaError._STATE, "transaction already open"))
        self._in_txn = True

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        if not self._in_txn:
            raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
        self._offsets.append((str(group_metadata), list(offsets)))

    def commit_transaction(self, timeout: float = -1) -> None:
        """Make the transaction's records visible, then one marker per partition written,
        then commit the offsets sent to it: all under the broker's lock, so atomic."""
        broker = self._broker
        with broker.lock:
            touched: list[tuple[str, int]] = []
            for topic, partition, record in self._pending:
                broker.append(topic, partition, record)
                if (topic, partition) not in touched:
                    touched.append((topic, partition))
            for topic, partition in touched:
                broker.append(topic, partition, Record(None, None, None, 0, -1, control=True))
            for group, offsets in self._offsets:
                for tp in offsets:
                    broker.committed[(group, tp.topic, tp.partition)] = tp.offset
        self._end_transaction()

    def abort_transaction(self, timeout: float = -1) -> None:
        self._end_transaction()

    def _end_transaction(self) -> None:
        self._pending.clear()
        self._offsets.clear()
        self._in_txn = False
