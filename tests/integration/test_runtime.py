"""The core runtime on the real broker: ordering across key-lanes, sinks, sends, batches,
errors that skip one event, and commits of the completed prefix."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict

import pytest

from streamer import App, ErrorPolicy, Event, Record, ShutdownIncomplete, Stream
from tests.kafkatools import all_committed, committed, produce, read_all, run_until

PARTITIONS = 8
KEYS = 500
MESSAGES = 20_000


def test_concurrent_lanes_keep_per_key_order_and_sink_exact_outputs(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("orders", partitions=PARTITIONS)
    out = create_topic("orders-out", partitions=PARTITIONS)
    app = App(unique_name("lanes"), brokers=kafka_bootstrap, commit_interval=0.5)
    source = app.topic(src, key_type=str, value_type=int, partitions=PARTITIONS)
    sink = app.topic(out, key_type=str, value_type=str, partitions=PARTITIONS)
    seen: dict[str, list[int]] = defaultdict(list)
    lanes_used: set[tuple[int, int]] = set()
    rng = random.Random(7)

    @app.agent(source, sink=[sink], concurrency=4)
    async def record(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            seen[event.key].append(event.value)
            lanes_used.add((event.partition, id(stream)))
            if rng.random() < 0.05:
                await asyncio.sleep(0.001)  # pacing: lets lanes overtake each other
            yield f"{event.key}:{event.value}"

    # Per key a sequence 0..39; keys interleaved so every partition sees many keys.
    produce(
        kafka_bootstrap,
        src,
        ((f"k{i % KEYS}".encode(), str(i // KEYS).encode()) for i in range(MESSAGES)),
    )
    asyncio.run(run_until(app, all_committed(kafka_bootstrap, app.group_id, src, PARTITIONS)))

    assert len(seen) == KEYS
    per_key = MESSAGES // KEYS
    redone = any(len(values) > per_key for values in seen.values())
    for key, values in seen.items():
        # In order: each value is the next one, or, after partitions were lost and taken
        # back (a starved broker's session timeout; at-least-once), a step back to where
        # the commit was. A reorder shows as a step forward that skips a value.
        steps = list(itertools.pairwise(values))
        assert values[0] == 0 and all(b == a + 1 or b <= a for a, b in steps), (
            f"order broken for {key}: {values}"
        )
        assert set(values) == set(range(per_key)), key
        if not redone:
            assert values == list(range(per_key)), f"order broken for {key}"
    # More than one lane per partition really ran (concurrency was exercised).
    assert len(lanes_used) > PARTITIONS
    outputs = read_all(kafka_bootstrap, out, expect=MESSAGES)
    got = Counter((m.key().decode(), m.value().decode()) for m in outputs)
    expected = Counter((f"k{i % KEYS}", f"k{i % KEYS}:{i // KEYS}") for i in range(MESSAGES))
    assert set(got) == set(expected)
    if not redone:  # nothing processed twice: every output once
        assert got == expected


def test_send_take_record_and_failing_event(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("in", partitions=2)
    side = create_topic("side", partitions=2)
    app = App(unique_name("misc"), brokers=kafka_bootstrap, commit_interval=0.2)
    source = app.topic(src, key_type=str, value_type=dict, partitions=2)
    side_topic = app.topic(side, key_type=str, value_type=dict, partitions=2)
    batches: list[list[Event]] = []
    processed: list[int] = []

    @app.agent(
        source, sink=[side_topic], name="batcher", on_error=ErrorPolicy(0, on_exhausted="skip")
    )
    async def batcher(stream: Stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take(10, within=0.2):
            batches.append(batch)
            for event in batch:
                if event.value["n"] == 13:
                    raise RuntimeError("thirteen")  # the whole batch is dropped
                processed.append(event.value["n"])
            yield Record(key="batch", value={"size": len(batch)}, headers=[("h", b"1")])

    @app.agent(source, name="sender")
    async def sender(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            await side_topic.send(key=event.key, value={"echo": event.value["n"]})

    produce(kafka_bootstrap, src, ((b"k", f'{{"n": {n}}}'.encode()) for n in range(50)))
    asyncio.run(run_until(app, lambda: sum(len(b) for b in batches) >= 50))

    # One key, so one partition and one lane: order is exact.
    flat = [e.value["n"] for b in batches for e in b]
    assert flat == list(range(50))
    assert all(len(b) <= 10 for b in batches)
    failed_batch = next(b for b in batches if any(e.value["n"] == 13 for e in b))
    outputs = read_all(kafka_bootstrap, side, expect=50 + len(batches) - 1)
    echoes = sorted(m.value() for m in outputs if m.key() == b"k")
    assert echoes == sorted(f'{{"echo":{n}}}'.encode() for n in range(50))
    batch_records = [m for m in outputs if m.key() == b"batch"]
    # Every batch but the failing one produced its record, with its headers.
    assert len(batch_records) == len(batches) - 1
    assert all(m.headers() == [("h", b"1")] for m in batch_records)
    assert sorted(int(m.value()[8:-1]) for m in batch_records) == sorted(
        len(b) for b in batches if b is not failed_batch
    )
    # Partition 0 holds every record (one key); partition 1 never had any to commit.
    assert committed(kafka_bootstrap, app.group_id, src, 2)[0] == 50


def test_undecodable_and_unfit_values_name_topic_and_field(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    from pydantic import BaseModel

    from streamer import SerializationError

    class Order(BaseModel):
        id: str
        amount: float

    src = create_topic("orders", partitions=1)
    app = App(unique_name("bad"), brokers=kafka_bootstrap, commit_interval=0.2)
    source = app.topic(src, key_type=str, value_type=Order, partitions=1)
    good: list[str] = []

    @app.agent(source)
    async def collect(stream: Stream) -> None:
        async for event in stream:
            good.append(event.value.id)

    with pytest.raises(SerializationError, match=rf"topic '{src}'.*amount"):
        source.encode_value({"id": "x", "amount": "lots"})
    produce(
        kafka_bootstrap,
        src,
        [
            (b"a", b'{"id": "1", "amount": 2.5}'),
            (b"b", b"not json"),
            (b"c", b'{"id": "3", "amount": "lots"}'),
            (b"d", b'{"id": "4", "amount": 1}'),
        ],
    )
    asyncio.run(run_until(app, lambda: len(good) >= 2))
    assert good == ["1", "4"]
    # The undecodable offsets do not stall the commit.
    assert committed(kafka_bootstrap, app.group_id, src, 1) == {0: 4}


def test_a_stuck_agent_is_reported(
    kafka_bootstrap: str,
    create_topic,
    unique_name,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import streamer.worker.runner as runner

    monkeypatch.setattr(runner, "STALL_AFTER", 0.5)
    src = create_topic("stuck", partitions=1)
    app = App(unique_name("stuck"), brokers=kafka_bootstrap, shutdown_timeout=1.0)
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    started = asyncio.Event()

    @app.agent(source)
    async def hang(stream: Stream) -> None:
        async for _ in stream:
            started.set()
            await asyncio.Event().wait()  # never completes

    produce(kafka_bootstrap, src, [(b"k", b"v"), (b"k", b"w")])
    with (
        caplog.at_level("WARNING", logger="streamer.worker"),
        pytest.raises(ShutdownIncomplete, match="1 event"),
    ):
        asyncio.run(run_until(app, lambda: "may be stuck" in caplog.text, timeout=30))
    assert f"{src}[0]: offset 0 has been in progress" in caplog.text
    assert committed(kafka_bootstrap, app.group_id, src, 1) == {0: -1001}  # nothing past it
