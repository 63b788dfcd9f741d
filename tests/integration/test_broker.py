"""The session broker is a real Kafka: keyed produce/consume in a group, and transactions.

These tests exercise the broker and the plugin fixtures only (no streamer runtime), so a
failure here means the test environment, not the framework, is broken.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamer.kafka.local import LocalKafka
from streamer.testing.pytest_plugin import BROKERS_ENV, SHARED_BROKERS, _session_root

N_MESSAGES = 10_000
N_TXN = 100


def _produce_keyed(bootstrap: str, topic: str) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Produce N_MESSAGES keyed records; return (offset, key, value) per partition as acked."""
    acked: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[msg.partition()].append((msg.offset(), msg.key(), msg.value()))

    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for i in range(N_MESSAGES):
        producer.produce(
            topic, key=f"key-{i % 101}".encode(), value=str(i).encode(), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:3]
    for records in acked.values():
        records.sort()
    return acked


def _drain(consumer: Consumer, expected: int, timeout: float = 60.0) -> list[Any]:
    """Consume until ``expected`` records arrived, then briefly more to catch extras."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    extra_until: float | None = None
    while time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            out.append(msg)
        if len(out) >= expected:
            if extra_until is None:
                extra_until = time.monotonic() + 1.0
            elif time.monotonic() >= extra_until:
                break
    return out


def test_keyed_roundtrip_in_a_group_keeps_partition_order(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = create_topic("roundtrip", partitions=4)
    acked = _produce_keyed(kafka_bootstrap, topic)
    assert sum(len(v) for v in acked.values()) == N_MESSAGES
    assert len(acked) == 4, "101 keys should spread over all 4 partitions"

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("roundtrip-group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        msgs = _drain(consumer, N_MESSAGES)
    finally:
        consumer.close()

    got: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    for m in msgs:
        got[m.partition()].append((m.offset(), m.key(), m.value()))
    assert sum(len(v) for v in got.values()) == N_MESSAGES
    # Same records, same order within each partition, as the broker acknowledged them.
    assert dict(got) == dict(acked)
    # And every key lives in exactly one partition, its values in produce order.
    per_key: dict[bytes, list[int]] = defaultdict(list)
    key_partition: dict[bytes, int] = {}
    for partition, records in got.items():
        for _, key, value in records:
            assert key_partition.setdefault(key, partition) == partition
            per_key[key].append(int(value))
    assert all(values == sorted(values) for values in per_key.values())
    pairs = {(k, str(v).encode()) for k, vs in per_key.items() for v in vs}
    assert pairs == {(f"key-{i % 101}".encode(), str(i).encode()) for i in range(N_MESSAGES)}


def _read_all(bootstrap: str, topic: str, group: str, isolation: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        return [m.value() for m in _drain(consumer, expected)]
    finally:
        consumer.close()


def test_transactions_commit_and_abort(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = create_topic("txn")
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txn-producer")}
    )
    producer.init_transactions(120)

    producer.begin_transaction()
    for i in range(N_TXN):
        producer.produce(topic, key=b"c", value=f"committed-{i}".encode())
    producer.commit_transaction(120)

    producer.begin_transaction()
    for i in range(N_TXN):
        producer.produce(topic, key=b"a", value=f"aborted-{i}".encode())
    # Flush first so the aborted records really reach the log before the abort marker.
    assert producer.flush(120) == 0
    producer.abort_transaction(120)

    committed = [f"committed-{i}".encode() for i in range(N_TXN)]
    aborted = [f"aborted-{i}".encode() for i in range(N_TXN)]

    seen = _read_all(kafka_bootstrap, topic, unique_name("rc"), "read_committed", N_TXN)
    assert seen == committed

    raw = _read_all(kafka_bootstrap, topic, unique_name("ru"), "read_uncommitted", 2 * N_TXN)
    assert raw == committed + aborted


def test_the_session_broker_is_light(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The session broker is short-lived, so it is started ``light`` (see LocalKafka): the
    JVM that answers at its address runs with the quick compiler only, no periodic
    safepoint, and fewer pool threads."""
    if os.environ.get(BROKERS_ENV):
        pytest.skip(f"{BROKERS_ENV} names a broker this session did not start")
    home = _session_root(tmp_path_factory) / SHARED_BROKERS / "plain"
    pid = int((home / "broker.pid").read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-XX:TieredStopAtLevel=1" in argv
    assert b"-XX:GuaranteedSafepointInterval=0" in argv  # no safepoint every second
    properties = dict(
        line.split("=", 1)
        for line in (home / "server.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert properties["num.io.threads"] == "2" and properties["num.network.threads"] == "1"
    assert str(home / "server.properties").encode() in argv  # the session's broker, no other
    status = LocalKafka(int(kafka_bootstrap.rsplit(":", 1)[1]), home=home).status()
    assert status.running and status.pid == pid
