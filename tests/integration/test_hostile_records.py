"""Hostile records on the real broker, under each error policy: random bytes, JSON nested
10,000 deep, a 10 MB value, invalid UTF-8 keys, Avro where JSON is expected, tombstones and
headers of odd shapes. Each one ends in the dead-letter topic (or is skipped, or stops the
worker with one line, as the policy says); the worker stays up otherwise and no good record
is lost."""

from __future__ import annotations

import asyncio
import io
import random
from typing import Any

import fastavro
import pytest
from confluent_kafka import KafkaException, Producer
from pydantic import BaseModel

from streamer import AgentFailed, App, ErrorPolicy, Stream
from tests.kafkatools import committed, end_offsets, read_all, run_until

BIG = 10 * 1024 * 1024
TOPIC_LIMIT = {"max.message.bytes": str(BIG + 1024 * 1024)}
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]
ODD_HEADERS: list[tuple[str, bytes | None]] = [
    ("", b""), ("none", None), ("binary", b"\x00\xff\xfe"), ("dup", b"1"), ("dup", b"2"),
    ("ünïcode-ключ", "значение".encode()),
]  # fmt: skip


class Order(BaseModel):
    id: str
    amount: float


def _good(i: int, headers: list[tuple[str, bytes | None]] | None = None) -> Record:
    return f"g{i}".encode(), f'{{"id": "g{i}", "amount": {i}}}'.encode(), headers or []


def _hostile() -> list[Record]:
    rng = random.Random(19)
    avro = io.BytesIO()
    fastavro.schemaless_writer(
        avro,
        {"type": "record", "name": "O", "fields": [{"name": "id", "type": "string"}]},
        {"id": "x"},
    )
    records: list[Record] = [
        (f"r{n}".encode(), rng.randbytes(rng.randint(1, 3000)), []) for n in range(15)
    ]
    records += [
        (b"deep", b"[" * 10_000 + b"]" * 10_000, []),
        (b"deep-object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, []),
        (b"big", b"x" * BIG, []),
        (b"\xff\xfe\xc3\x28", b'{"id": "k", "amount": 1}', []),  # key is not UTF-8
        (b"avro", avro.getvalue(), []),
        (b"tombstone", None, []),  # the agent fails on it (no order), then the policy acts
        (b"empty", b"", []),
        (b"odd-headers", b"{broken", ODD_HEADERS),
        (b"nul", b"\x00" * 100, []),
    ]
    return records


def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": BIG + 1024 * 1024})
    for key, value, headers in records:
        producer.produce(topic, value, key, headers=headers or None)
        producer.poll(0)
    assert producer.flush(60) == 0


@pytest.fixture
def hostile_setup(kafka_bootstrap: str, create_topic, unique_name):  # type: ignore[no-untyped-def]
    def make(policy: str) -> tuple[App, str, str, list[Record], list[Record]]:
        src = create_topic("hostile-in", partitions=1, config=TOPIC_LIMIT)
        out = create_topic("hostile-out", partitions=1)
        app_id = unique_name("hostile")
        dlq = create_topic(f"{app_id}-check-dlq", partitions=1, config=TOPIC_LIMIT)
        app = App(app_id, brokers=kafka_bootstrap, commit_interval=0.2,
                  on_error=ErrorPolicy(retries=1, backoff=0.01, on_exhausted=policy,
                                       dead_letter_topic=dlq),
                  consumer_config={"fetch.max.bytes": BIG * 2},
                  # The 10 MB record goes to the dead-letter topic as it came.
                  producer_config={"message.max.bytes": BIG * 2})  # fmt: skip
        source = app.topic(src, key_type=str, value_type=Order, partitions=1)
        sink = app.topic(out, key_type=str, value_type=str, partitions=1)

        @app.agent(source, sink=[sink])
        async def check(stream: Stream):  # type: ignore[no-untyped-def]
            async for event in stream:
                yield event.value.id  # a tombstone has no value: AttributeError

        good = [_good(i) for i in range(30)] + [_good(99, ODD_HEADERS)]
        hostile = _hostile()
        mixed: list[Record] = []
        for i, record in enumerate(hostile):  # interleaved: good, hostile, good, ...
            mixed += [good[i], record]
        mixed += good[len(hostile) :]
        _produce(kafka_bootstrap, src, mixed)
        return app, src, dlq, good, hostile

    return make


@pytest.mark.parametrize("policy", ["dead_letter", "skip"])
def test_hostile_records_are_dead_lettered_or_skipped_and_nothing_else_is_lost(
    kafka_bootstrap: str, hostile_setup: Any, policy: str
) -> None:
    app, src, dlq, good, hostile = hostile_setup(policy)
    out = next(name for name in app.topics if name != src)
    total = len(good) + len(hostile)

    def all_committed() -> bool:
        try:
            return committed(kafka_bootstrap, app.group_id, src, 1) == {0: total}
        except KafkaException:  # the group's coordinator is still loading
            return False

    asyncio.run(run_until(app, all_committed))  # fails if the worker stops early
    outputs = read_all(kafka_bootstrap, out, expect=len(good))
    assert sorted(m.value().decode() for m in outputs) == sorted(
        f"g{int(k[1:])}" for k, _, _ in good if k is not None
    )
    letters = read_all(kafka_bootstrap, dlq, idle=2) if policy == "dead_letter" else []
    if policy == "dead_letter":
        assert sorted((m.key(), m.value()) for m in letters) == sorted(
            (k, v) for k, v, _ in hostile
        )
        odd = next(m for m in letters if m.key() == b"odd-headers")
        kept = [(k, v) for k, v in odd.headers() if not k.startswith("streamer.")]
        assert kept == ODD_HEADERS  # the original headers, as they came
    else:
        assert end_offsets(kafka_bootstrap, dlq, 1) == {0: 0}


def test_a_hostile_record_under_stop_ends_the_worker_with_one_line_and_holds_its_offset(
    kafka_bootstrap: str, hostile_setup: Any
) -> None:
    app, src, _, _, _ = hostile_setup("stop")
    with pytest.raises(AgentFailed) as info:
        asyncio.run(run_until(app, lambda: False, timeout=120))
    assert "\n" not in str(info.value)
    # The first hostile record is offset 1 (after one good record): nothing past it commits.
    assert committed(kafka_bootstrap, app.group_id, src, 1).get(0, 0) <= 1
