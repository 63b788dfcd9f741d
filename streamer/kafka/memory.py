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

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamer.clock import to_millis
from streamer.events import Headers
from streamer.kafka.memory_broker import (
    NO_OFFSET,
    SCHEME,
    MemoryBroker,
    Message,
    Record,
    murmur2,
    partition_for,
)
from streamer.kafka.memory_consumer import MemoryConsumer

__all__ = [
    "NO_OFFSET",
    "SCHEME",
    "MemoryAdmin",
    "MemoryBackend",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryProducer",
    "Message",
    "Record",
    "murmur2",
    "partition_for",
]


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
        self._reports: list[tuple[Callable[..., Any], KafkaError | None, Message]] = []
        # librdkafka reports successes too unless told not to (streamer's default is not to).
        self._report_successes = not config.get("delivery.report.only.error", False)

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
        if self._report_successes and on_delivery is not None:
            self._reports.append((on_delivery, None, Message(topic, where, record)))

    def poll(self, timeout: float = 0) -> int:
        """Serve the delivery callbacks: of failed records, and of stored ones unless
        ``delivery.report.only.error`` (streamer's default)."""
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

    def close(self) -> None:
        """Drop the open transaction (nothing of it was visible); delivered records stay."""
        self._end_transaction()

    def _end_transaction(self) -> None:
        self._pending.clear()
        self._offsets.clear()
        self._in_txn = False
