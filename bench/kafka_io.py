"""The broker side of the bench: which broker, topics, pre-produced input, reading output.

Nothing here is timed; it sets a scenario up and checks what it left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import key_of, payload
from streamer.kafka.clients import is_transient

T = TypeVar("T")

log = logging.getLogger("bench")

BROKERS_ENV = "STREAMER_BENCH_BROKERS"

Say = Callable[[str], None]


@contextlib.contextmanager
def broker(brokers: str | None, say: Say) -> Iterator[str]:
    """``brokers``, else ``$STREAMER_BENCH_BROKERS``, else a LocalKafka on a free port that
    is stopped (and its data deleted) on exit."""
    chosen = brokers or os.environ.get(BROKERS_ENV)
    if chosen:
        yield chosen
        return
    from streamer.kafka.local import LocalKafka, free_port_pair

    home = Path(tempfile.mkdtemp(prefix="streamer-bench-kafka-"))
    local = LocalKafka(free_port_pair(), home=home)
    try:
        yield local.up(progress=say)
    finally:
        local.down()
        shutil.rmtree(home, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


class Topics:
    """Creates uniquely named topics for one scenario and deletes them (and its consumer
    groups) at the end, so runs never see each other's data and the broker is left clean."""

    def __init__(self, brokers: str) -> None:
        self.brokers = brokers
        # librdkafka's own log lines go through (quiet) Python logging, not raw to stderr.
        config: dict[str, Any] = {"bootstrap.servers": brokers, "logger": log}
        self.admin = AdminClient(config)
        self.created: list[str] = []
        self.groups: list[str] = []

    def create(self, name: str, partitions: int, config: dict[str, str] | None = None) -> str:
        new = NewTopic(name, num_partitions=partitions, config=dict(config or {}))
        self.admin.create_topics([new], operation_timeout=30)[name].result(timeout=30)
        self.created.append(name)
        self._wait(name, partitions)
        return name

    def _wait(self, name: str, partitions: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):
                topic = self.admin.list_topics(topic=name, timeout=5.0).topics.get(name)
                if (
                    topic is not None
                    and topic.error is None
                    and len(topic.partitions) == partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())
                ):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"topic {name} did not appear within {timeout:.0f}s")

    def cleanup(self) -> None:
        """Best effort: a leftover uniquely named topic harms nobody."""
        futures: list[Any] = []
        try:
            if self.created:
                futures += self.admin.delete_topics(self.created, operation_timeout=30).values()
            if self.groups:
                futures += self.admin.delete_consumer_groups(self.groups).values()
        except Exception as exc:  # cleanup must never hide the figures
            log.warning("could not delete bench topics %s: %s", self.created, exc)
        for future in futures:
            try:
                future.result(timeout=30)
            except Exception as exc:  # e.g. a changelog the worker never created
                log.debug("cleanup: %s", exc)


def _producer(brokers: str, **extra: Any) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "partitioner": "murmur2_random",  # as streamer partitions
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
    }
    config.update(extra)
    return Producer(config)


def produce(brokers: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Produce ``records`` as fast as the client allows; returns how many were acknowledged."""
    producer = _producer(brokers)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or failures:
        raise RuntimeError(f"pre-producing to {topic} failed: {failures[:1] or 'no ack'}")
    return count


def json_records(n: int, pad: int = 0) -> Iterator[tuple[bytes, bytes]]:
    for i in range(n):
        yield key_of(i), orjson.dumps(payload(i, pad=pad))


def produce_at_rate(brokers: str, topic: str, n: int, rate: float) -> float:
    """Produce ``n`` JSON records at ``rate`` per second, each carrying its produce time
    (``ts``, ms since the epoch) in its value; ``linger.ms=0`` so none waits in the client.
    Returns the rate achieved."""
    producer = _producer(brokers, **{"linger.ms": 0})
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        value = orjson.dumps(payload(i, ts_ms=time.time() * 1000.0))
        producer.produce(topic, value, key_of(i))
        producer.poll(0)
    elapsed = time.perf_counter() - start
    if producer.flush(60):
        raise RuntimeError(f"records to {topic} not acknowledged")
    return n / elapsed if elapsed > 0 else 0.0


def patiently(read: Callable[[], T], timeout: float = 120.0) -> T:
    """``read()``, asked again while the broker lets it time out or answers with a
    retriable error (a busy machine, a leader moving), for up to ``timeout`` seconds: the
    reads the bench makes are idempotent, and a slow answer must not fail a measurement."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def high_watermarks(consumer: Consumer, topic: str, partitions: Iterable[int]) -> int:
    """Sum of the high watermarks of ``partitions`` of ``topic``, each read patiently."""
    return sum(
        patiently(lambda p=p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
        for p in partitions
    )


def end_offsets(brokers: str, topic: str, at_least: int = 0, timeout: float = 30.0) -> int:
    """Sum of ``topic``'s end offsets as a read_committed reader sees them: how many
    records it holds. Asked again (for up to ``timeout`` seconds) while below ``at_least``:
    a transaction's commit returns before its markers are written to the partitions, and
    until they are the end offsets stop short of its records."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": unique("watermarks")})
    try:
        meta = patiently(lambda: consumer.list_topics(topic, timeout=10)).topics[topic]
        deadline = time.monotonic() + timeout
        while True:
            total = high_watermarks(consumer, topic, meta.partitions)
            if total >= at_least or time.monotonic() >= deadline:
                return total
            time.sleep(0.1)  # polling an observable condition, bounded by the deadline
    finally:
        consumer.close()


def read_latencies(brokers: str, topic: str, expect: int, timeout: float = 60.0) -> list[float]:
    """Read ``expect`` records of ``topic``; for each, its timestamp (set when the processor
    produced it) minus the ``ts`` its input carried, in ms."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique("latency-reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(latencies) < expect and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                produced_ms = message.timestamp()[1]
                sent_ms = orjson.loads(message.value() or b"{}")["ts"]
                latencies.append(produced_ms - sent_ms)
    finally:
        consumer.close()
    return latencies


class CommittedReader:
    """Reads ``topic`` as a ``read_committed`` consumer does, in a thread, while a scenario
    runs: for each record, the time it became readable (when this reader got it) minus the
    ``ts`` its input carried, in ms. Under exactly-once an output is only readable once its
    transaction committed, so this is the latency a downstream consumer sees."""

    def __init__(self, brokers: str, topic: str, partitions: int, expect: int) -> None:
        self.expect = expect
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": unique("committed-reader"),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,  # do not add fetch waits to what is measured
            }
        )
        # Assigned, not subscribed: no group join delays the first reads.
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._thread = threading.Thread(target=self._run, name="committed-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = self._consumer
        while not self._stop.is_set() and len(self.latencies) < self.expect:
            # poll() returns as soon as one record is readable; consume(n, timeout) would wait
            # for n records or the whole timeout, adding up to it to what is measured. What
            # else is already fetched is taken without waiting.
            first = consumer.poll(0.05)
            if first is None:
                continue
            now_ms = time.time() * 1000.0
            for message in (first, *consumer.consume(1000, 0)):
                if message.error() is not None:
                    continue
                self.latencies.append(now_ms - orjson.loads(message.value() or b"{}")["ts"])

    def close(self, timeout: float = 60.0) -> list[float]:
        """Wait (up to ``timeout``) for every expected record, then stop; the latencies."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
        return self.latencies
