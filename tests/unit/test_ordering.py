"""streamer.worker.ordering over the in-memory Kafka: records of the partitions that feed one
stream time come out lowest time first, offset order kept per partition; an empty partition
that is not caught up holds stream time for a bounded wait; one that is caught up does not;
held records go when their partition is sought or revoked. Expectations come from a
reference merge of the produced records."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from streamer.kafka.memory import MemoryBroker, Record
from streamer.kafka.memory_consumer import MemoryConsumer
from streamer.testing.clock import SimulatedClock
from streamer.worker.ordering import SPAN_MS, OrderedConsumer

TOPIC = "t"


@dataclass(eq=False)
class State:
    """What the ordering reads of the worker's partition state."""

    paused: bool = False
    buffered: int = 0


def _setup(
    partitions: int, records: dict[int, list[int]], limit: int = 10_000, wait: float = 0.5
) -> tuple[OrderedConsumer, dict[Any, State], MemoryConsumer, SimulatedClock]:
    broker = MemoryBroker(f"order-{random.random()}")
    broker.create_topic(TOPIC, partitions)
    for partition, stamps in records.items():
        for ts in stamps:
            broker.append(TOPIC, partition, Record(None, str(ts).encode(), None, ts, -1))
    inner = MemoryConsumer(broker, {"group.id": "g", "auto.offset.reset": "earliest"})
    states = {(TOPIC, p): State() for p in range(partitions)}
    inner.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    clock = SimulatedClock(start=1_000.0)
    ordered = OrderedConsumer(inner, {TOPIC: 0}, states, wait, limit, clock)
    return ordered, states, inner, clock


def _drain(ordered: OrderedConsumer, calls: int = 1000) -> list[Any]:
    out = []
    for _ in range(calls):
        out += ordered.consume(500, 0)
    return out


def _running_max(stamps: list[int]) -> list[int]:
    result, run = [], -1
    for ts in stamps:
        run = max(run, ts)
        result.append(run)
    return result


def test_records_come_out_lowest_time_first_in_offset_order_per_partition() -> None:
    rng = random.Random(1)
    records = {}
    for p in range(4):
        t, stamps = 1_000_000 + rng.randrange(5_000), []
        for _ in range(rng.randrange(300, 900)):
            t += rng.randrange(0, 40)
            # Some records out of order inside their partition.
            stamps.append(t - rng.randrange(0, 500) if rng.random() < 0.05 else t)
        records[p] = stamps
    ordered, _, _, _ = _setup(4, records)
    out = _drain(ordered)
    # The reference: every record once; per partition in offset order; across partitions
    # by the partition's time (the running maximum), which never decreases in the output.
    assert sorted((m.partition(), m.offset()) for m in out) == sorted(
        (p, i) for p, stamps in records.items() for i in range(len(stamps))
    )
    for p in records:
        assert [m.offset() for m in out if m.partition() == p] == list(range(len(records[p])))
    times = {p: _running_max(stamps) for p, stamps in records.items()}
    keys = [times[m.partition()][m.offset()] for m in out]
    assert keys == sorted(keys)
    assert ordered.held == 0


def test_one_call_hands_out_at_most_a_span_of_event_time() -> None:
    records = {0: list(range(0, 5_000, 10)), 1: list(range(5, 5_000, 10))}
    ordered, _, _, _ = _setup(2, records)
    ordered.consume(500, 0)  # fetches; the first span
    for _ in range(20):
        chunk = ordered.consume(500, 0)
        if chunk:
            stamps = [m.timestamp()[1] for m in chunk]
            assert max(stamps) - min(stamps) <= SPAN_MS


def test_an_empty_partition_that_is_not_caught_up_holds_stream_time_for_the_wait() -> None:
    records = {0: [1_000, 2_000, 3_000], 1: [1_500, 2_500]}
    ordered, _, inner, clock = _setup(2, records, wait=0.5)
    inner.pause([TopicPartition(TOPIC, 1)])  # partition 1 has records it does not fetch
    assert _drain(ordered, 5) == []  # held: partition 1 is behind, its time unknown
    clock._now += 0.6  # the wait passed: stream time may pass it
    out = _drain(ordered, 5)
    assert [m.timestamp()[1] for m in out] == [1_000, 2_000, 3_000]
    inner.resume([TopicPartition(TOPIC, 1)])
    assert [m.timestamp()[1] for m in _drain(ordered, 5)] == [1_500, 2_500]


def test_a_caught_up_partition_does_not_hold_stream_time() -> None:
    ordered, _, _, _ = _setup(3, {0: [10, 20], 1: [15]})  # partition 2 is empty
    out = ordered.consume(500, 0)
    out += ordered.consume(500, 0)
    assert [m.timestamp()[1] for m in out] == [10, 15, 20]


def test_a_waiting_partition_with_a_time_lets_older_records_of_the_others_out() -> None:
    ordered, _, inner, clock = _setup(2, {0: [100, 200, 900], 1: [150, 500, 1_000]}, wait=5)
    out = ordered.consume(4, 0)  # fetches p0's three records and p1's first
    inner.pause([TopicPartition(TOPIC, 1)])  # p1 has more, not fetched: it is behind
    out += _drain(ordered, 3)
    assert [m.timestamp()[1] for m in out] == [100, 150]  # p1's time is 150: 200 waits
    clock._now += 5  # the bounded wait is over
    assert [m.timestamp()[1] for m in _drain(ordered, 3)] == [200, 900]
    inner.resume([TopicPartition(TOPIC, 1)])
    assert [m.timestamp()[1] for m in _drain(ordered, 3)] == [500, 1_000]


def test_a_partition_rereading_after_a_rewind_holds_stream_time_until_it_is_back() -> None:
    """After a rewind (a failed checkpoint), a partition whose records come back late holds
    the others' records however long that takes: they are known to exist (a join reading
    the others would otherwise miss the table rows they carry). Found under load: an order
    released 0.5 s after the rewind met a table without its customer."""
    records = {0: [1_000, 2_000, 3_000], 1: [1_500, 2_500]}
    ordered, _, inner, clock = _setup(2, records, wait=0.5)
    assert len(_drain(ordered, 5)) == 5
    for partition in (0, 1):
        ordered.seek(TopicPartition(TOPIC, partition, 0))  # the rewind
    inner.pause([TopicPartition(TOPIC, 1)])  # partition 1's records are slow to come again
    assert _drain(ordered, 5) == []
    clock._now += 60  # far past the wait: still re-reading, still held
    assert _drain(ordered, 5) == []
    inner.resume([TopicPartition(TOPIC, 1)])
    out = _drain(ordered, 5)
    assert [m.timestamp()[1] for m in out] == [1_000, 1_500, 2_000, 2_500, 3_000]


def test_a_partition_assigned_again_is_not_rereading() -> None:
    """What a partition fetched before it was revoked says nothing once it is assigned again
    (another worker may have moved it on: its committed offset is where it starts, not a
    seek): the bounded wait applies."""
    ordered, states, inner, clock = _setup(2, {0: [1_000, 2_000], 1: [1_500]}, wait=0.5)
    assert len(_drain(ordered, 5)) == 3
    states[(TOPIC, 1)] = State()  # revoked and assigned again (a new state object)
    inner.seek(TopicPartition(TOPIC, 0, 0))
    inner.seek(TopicPartition(TOPIC, 1, 0))  # assigned at an offset: no rewind
    inner.pause([TopicPartition(TOPIC, 1)])
    assert _drain(ordered, 5) == []
    clock._now += 0.6
    assert [m.timestamp()[1] for m in _drain(ordered, 5)] == [1_000, 2_000]


def test_seek_and_revoke_drop_what_is_held() -> None:
    ordered, states, inner, _ = _setup(2, {0: [10, 20, 30], 1: []}, wait=60)
    inner.pause([TopicPartition(TOPIC, 1)])
    # Make partition 1 look behind: records it has not fetched.
    inner._broker.append(TOPIC, 1, Record(None, b"x", None, 5, -1))
    assert _drain(ordered, 2) == [] and ordered.held == 3
    ordered.seek(TopicPartition(TOPIC, 0, 0))  # a rewind: held records are fetched again
    assert ordered.held == 0
    _drain(ordered, 1)
    assert ordered.held == 3
    states[(TOPIC, 0)] = State()  # revoked and assigned anew (another state object)
    inner.seek(TopicPartition(TOPIC, 0, 3))
    assert _drain(ordered, 2) == [] and ordered.held == 0


def test_a_partition_holding_too_many_records_is_paused_then_resumed() -> None:
    records = {0: list(range(0, 3_000)), 1: [5_000]}
    ordered, states, inner, _ = _setup(2, records, limit=100, wait=60)
    inner.pause([TopicPartition(TOPIC, 1)])  # p1 behind: p0's records are held
    for _ in range(5):
        ordered.consume(50, 0)
    assert states[(TOPIC, 0)].paused and ordered.held <= 150
    inner.resume([TopicPartition(TOPIC, 1)])
    out = _drain(ordered, 200)
    assert not states[(TOPIC, 0)].paused
    assert [m.timestamp()[1] for m in out] == sorted(m.timestamp()[1] for m in out)
    assert len(out) == 3_001
