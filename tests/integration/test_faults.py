"""The fault-injecting backend against the real broker: each fault makes the wrapped client
behave as the real failure would (records not written, transactions abortable or fenced,
errors with librdkafka's flags), and everything else passes through."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.kafka.backend import ConfluentBackend, Consumer, Producer
from streamer.kafka.clients import consumer_config, producer_config
from streamer.testing.faults import (
    ConsumeFailure,
    DeliveryFailure,
    FaultyBackend,
    OffsetCommitFailure,
    TransactionFailure,
    WatermarkTimeout,
)
from tests.kafkatools import produce, read_all, retry_transient


def _producer(backend: FaultyBackend, bootstrap: str, **extra: Any) -> Producer:
    return backend.producer(producer_config(bootstrap, extra))


def _transactional(backend: FaultyBackend, bootstrap: str, txn_id: str) -> Producer:
    producer = _producer(backend, bootstrap, **{"transactional.id": txn_id})
    producer.init_transactions(30)
    return producer


def _consumer(backend: FaultyBackend, bootstrap: str, group: str) -> Consumer:
    return backend.consumer(consumer_config(bootstrap, group, {}))


def _error(info: pytest.ExceptionInfo[KafkaException]) -> KafkaError:
    error = info.value.args[0]
    assert isinstance(error, KafkaError)
    return error


def _values(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    return [m.value() for m in read_all(bootstrap, topic, expect=expect, idle=2.0)]


def test_delivery_failure_refuses_the_nth_record(kafka_bootstrap: str, create_topic) -> None:
    topic = create_topic("faults-delivery")
    fault = DeliveryFailure(topic, nth=2)
    backend = FaultyBackend(ConfluentBackend(), fault)
    producer = _producer(backend, kafka_bootstrap)
    reports: list[tuple[Any, Any]] = []
    for value in (b"a", b"b", b"c"):
        producer.produce(topic, value, on_delivery=lambda e, m: reports.append((e, m)))
    assert producer.flush(30) == 0
    assert fault.fired.is_set() and fault.count == 1
    ((error, message),) = [(e, m) for e, m in reports if e is not None]
    assert error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert message.value() == b"b" and message.topic() == topic
    assert _values(kafka_bootstrap, topic, 2) == [b"a", b"c"]


def test_delivery_failure_matching_a_predicate_uses_the_global_callback(
    kafka_bootstrap: str, create_topic
) -> None:
    topic = create_topic("faults-match")
    fault = DeliveryFailure(
        topic, code=KafkaError.INVALID_RECORD, match=lambda k, v: v == b"poison", times=None
    )
    failed: list[Any] = []
    backend = FaultyBackend(ConfluentBackend(), fault)
    producer = _producer(backend, kafka_bootstrap, on_delivery=lambda e, m: failed.append(e))
    for value in (b"ok", b"poison", b"ok2", b"poison"):
        producer.produce(topic, value)
    producer.flush(30)
    assert fault.count == 2
    assert [e.code() for e in failed if e is not None] == [KafkaError.INVALID_RECORD] * 2
    assert _values(kafka_bootstrap, topic, 2) == [b"ok", b"ok2"]


def test_delivery_failure_in_a_transaction_makes_it_abortable(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    topic = create_topic("faults-txn-delivery")
    fault = DeliveryFailure(topic, nth=2)
    backend = FaultyBackend(ConfluentBackend(), fault)
    producer = _transactional(backend, kafka_bootstrap, unique_name("txn"))
    producer.begin_transaction()
    producer.produce(topic, b"doomed-1")
    producer.produce(topic, b"refused")
    with pytest.raises(KafkaException) as info:
        producer.commit_transaction(30)
    assert _error(info).txn_requires_abort() and not _error(info).fatal()
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"after")
    producer.commit_transaction(30)
    assert _values(kafka_bootstrap, topic, 1) == [b"after"]


def test_commit_transaction_timeout_is_retriable(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    topic = create_topic("faults-txn-timeout")
    fault = TransactionFailure("timeout")
    producer = _transactional(
        FaultyBackend(ConfluentBackend(), fault), kafka_bootstrap, unique_name("txn")
    )
    producer.begin_transaction()
    producer.produce(topic, b"once")
    with pytest.raises(KafkaException) as info:
        producer.commit_transaction(30)
    assert _error(info).retriable() and _error(info).code() == KafkaError._TIMED_OUT
    producer.commit_transaction(30)  # retrying carries on with the same transaction
    assert fault.count == 1
    assert _values(kafka_bootstrap, topic, 1) == [b"once"]


def test_commit_transaction_abortable(kafka_bootstrap: str, create_topic, unique_name) -> None:
    topic = create_topic("faults-txn-abortable")
    fault = TransactionFailure("abortable", nth=2)
    producer = _transactional(
        FaultyBackend(ConfluentBackend(), fault), kafka_bootstrap, unique_name("txn")
    )
    for value in (b"first", b"aborted"):
        producer.begin_transaction()
        producer.produce(topic, value)
        try:
            producer.commit_transaction(30)
        except KafkaException as exc:
            assert exc.args[0].txn_requires_abort()
            producer.abort_transaction(30)
    assert fault.count == 1 and fault.seen == 2
    assert _values(kafka_bootstrap, topic, 1) == [b"first"]


def test_commit_transaction_fenced_is_fatal(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    topic = create_topic("faults-txn-fenced")
    fault = TransactionFailure("fenced")
    producer = _transactional(
        FaultyBackend(ConfluentBackend(), fault), kafka_bootstrap, unique_name("txn")
    )
    producer.begin_transaction()
    producer.produce(topic, b"never")
    with pytest.raises(KafkaException) as info:
        producer.commit_transaction(30)
    error = _error(info)
    assert error.fatal() and error.code() == KafkaError._FENCED
    with pytest.raises(KafkaException):  # unusable from now on
        producer.begin_transaction()
    produce(kafka_bootstrap, topic, [(None, b"marker")])
    assert _values(kafka_bootstrap, topic, 1) == [b"marker"]


def test_send_offsets_failure(kafka_bootstrap: str, create_topic, unique_name) -> None:
    topic = create_topic("faults-send-offsets")
    group = unique_name("group")
    fault = TransactionFailure("abortable", call="send_offsets")
    backend = FaultyBackend(ConfluentBackend(), fault)
    producer = _transactional(backend, kafka_bootstrap, unique_name("txn"))
    consumer = _consumer(backend, kafka_bootstrap, group)
    try:
        producer.begin_transaction()
        producer.produce(topic, b"x")
        offsets = [TopicPartition(topic, 0, 1)]
        with pytest.raises(KafkaException) as info:
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        assert _error(info).txn_requires_abort()
        producer.abort_transaction(30)
        committed = retry_transient(lambda: consumer.committed([TopicPartition(topic, 0)], 10))
        assert committed[0].offset < 0  # nothing was committed
    finally:
        consumer.close()


def test_offset_commit_failure(kafka_bootstrap: str, create_topic, unique_name) -> None:
    topic = create_topic("faults-commit")
    produce(kafka_bootstrap, topic, [(None, b"a"), (None, b"b")])
    group = unique_name("group")
    fault = OffsetCommitFailure(group=group)
    consumer = _consumer(FaultyBackend(ConfluentBackend(), fault), kafka_bootstrap, group)
    try:
        offsets = [TopicPartition(topic, 0, 2)]
        with pytest.raises(KafkaException) as info:
            consumer.commit(offsets=offsets, asynchronous=False)
        assert _error(info).code() == KafkaError.REBALANCE_IN_PROGRESS

        def stored() -> int:  # the group coordinator may be moving on a busy broker
            result = retry_transient(lambda: consumer.committed([TopicPartition(topic, 0)], 10))
            return int(result[0].offset)

        assert stored() < 0
        retry_transient(lambda: consumer.commit(offsets=offsets, asynchronous=False))
        assert stored() == 2
    finally:
        consumer.close()


def test_consume_failure_returns_an_error_message_or_raises(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    topic = create_topic("faults-consume")
    produce(kafka_bootstrap, topic, [(None, b"a")])
    message_fault = ConsumeFailure("streamer-restore-")
    raising_fault = ConsumeFailure("streamer-restore-", code=KafkaError._ALL_BROKERS_DOWN,
                                   raises=True, nth=2)  # fmt: skip
    backend = FaultyBackend(ConfluentBackend(), message_fault, raising_fault)
    other = _consumer(backend, kafka_bootstrap, unique_name("app"))  # not selected
    restore = _consumer(backend, kafka_bootstrap, unique_name("streamer-restore-t[0]"))
    try:
        restore.assign([TopicPartition(topic, 0, 0)])
        (failed,) = restore.consume(10, 1.0)
        assert failed.error().code() == KafkaError._TRANSPORT
        assert (failed.topic(), failed.partition()) == (topic, 0)
        with pytest.raises(KafkaException) as info:
            restore.consume(10, 1.0)
        assert _error(info).code() == KafkaError._ALL_BROKERS_DOWN
        values: list[bytes | None] = []
        for _ in range(50):  # then records flow as usual
            values += [m.value() for m in restore.consume(10, 0.5) if m.error() is None]
            if values:
                break
        assert values == [b"a"]
        other.assign([TopicPartition(topic, 0, 0)])
        assert all(m.error() is None for m in other.consume(10, 1.0))
        assert message_fault.count == 1 and raising_fault.count == 1
    finally:
        restore.close()
        other.close()


def test_watermark_timeout_only_after_the_cue(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    topic = create_topic("faults-watermark")
    produce(kafka_bootstrap, topic, [(None, b"a")])
    cue = threading.Event()
    fault = WatermarkTimeout("streamer-standby-", cue=cue, times=2)
    consumer = _consumer(
        FaultyBackend(ConfluentBackend(), fault), kafka_bootstrap, unique_name("streamer-standby-")
    )
    tp = TopicPartition(topic, 0)
    try:
        assert consumer.get_watermark_offsets(tp, timeout=10) == (0, 1)
        assert not fault.fired.is_set()
        cue.set()
        for _ in range(2):
            with pytest.raises(KafkaException) as info:
                consumer.get_watermark_offsets(tp, timeout=10)
            assert _error(info).code() == KafkaError._TIMED_OUT
        assert fault.wait(0) and fault.count == 2
        assert consumer.get_watermark_offsets(tp, timeout=10) == (0, 1)
    finally:
        consumer.close()
