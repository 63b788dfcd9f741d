"""Sliding windows and sessions on the real broker, exactly-once: counts over out-of-order
records equal the plain-Python reference (tests/windows_reference.py), each final window
closes once, and the changelog (read_committed) holds exactly the reference's windows:
sessions that a bridging event merged away are deleted there (tombstones), not left
behind."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from streamer import App, Stream
from streamer.state.sessions import end_of
from streamer.state.sliding import last_of
from streamer.state.window_store import CLOSED_FLAG, META_KEY, split_key
from tests import windows_reference as reference
from tests.kafkatools import read_all, run_until

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(4)]


def _events(base: int) -> list[reference.Timed]:
    rng = random.Random(33)
    clock = {p: base for p in range(PARTITIONS)}
    events = []
    for i in range(400):
        key = rng.choice(KEYS)
        partition = KEYS.index(key) % PARTITIONS
        clock[partition] += rng.randrange(0, 500)
        behind = 20_000 if i % 71 == 35 else rng.randrange(0, 2_500)
        events.append((key, partition, clock[partition] - behind))
    # An explicit bridge on a key of its own: [0, 1 s] and [3 s, 4 s], then an event at
    # 2 s (1 s from each) merges them. Then time moves on, so both tables close it.
    bridge = clock[0] + 30_000
    for offset in (0, 1_000, 3_000, 4_000, 2_000, 40_000):
        events.append(("bridge", 0, bridge + offset))
    return events


def test_sliding_and_session_counts_closes_and_changelog_on_the_broker(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("clicks", partitions=PARTITIONS)
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = _events(base)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for key, partition, ts in events:
        producer.produce(src, b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0

    app = App(unique_name("kinds"), brokers=kafka_bootstrap, state_dir=tmp_path,
              processing_guarantee="exactly_once")  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    closes: dict[str, Counter[reference.Window]] = {"sliding": Counter(), "session": Counter()}

    def on_close(kind: str):  # type: ignore[no-untyped-def]
        def record(key: str, start: float, end: float, value: int) -> None:
            closes[kind][(key, round(start * 1000), round(end * 1000), value)] += 1

        return record

    sliding = app.table("sliding", default=int, value_type=int).sliding(
        2, grace=3, on_close=on_close("sliding"), idle_close=1.5
    )
    sessions = app.table("sessions", default=int, value_type=int).session(
        1.5, grace=3, on_close=on_close("session"), idle_close=1.5
    )

    @app.agent(source)
    async def count(stream: Stream) -> None:
        async for event in stream:
            sliding[event.key] += 1
            sessions[event.key] += 1

    expected = {
        "sliding": reference.sliding(events, 2_000, 3_000),
        "session": reference.sessions(events, 1_500, 3_000),
    }
    merged = ("bridge", events[-6][2], events[-3][2], 5)
    assert expected["session"][0][merged] == 1  # the reference merges the bridge too
    waited: list[float] = []

    def done() -> bool:
        if any(sum(closes[k].values()) < sum(expected[k][0].values()) for k in closes):
            return False
        waited.append(time.monotonic())
        return waited[-1] - waited[0] > 2.5  # run on a while: a repeated close would show

    asyncio.run(run_until(app, done, timeout=90))
    for kind, table in (("sliding", sliding), ("session", sessions)):
        windows, late = expected[kind]
        assert closes[kind] == windows, kind  # each final window once, with its count
        assert table.late_events == late, kind
    assert expected["sliding"][1] >= 3

    # The changelogs hold exactly the reference's windows, closed; nothing merged away.
    for kind, name in (("sliding", "sliding"), ("session", "sessions")):
        changelog = read_all(kafka_bootstrap, f"{app.id}-{name}-changelog", idle=1)
        latest = {(m.partition(), m.key()): m.value() for m in changelog}
        stored = Counter()
        for (_, key), value in latest.items():
            if key == META_KEY or value is None:
                continue
            start, user_key = split_key(key)
            assert value[:1] == CLOSED_FLAG
            end = end_of(value) if kind == "session" else start + 2_000
            if kind == "sliding":
                assert last_of(value) <= end
            stored[(user_key.decode(), start, end, int(value[9:]))] += 1
        assert stored == expected[kind][0], kind
        if kind == "session":  # the later of the two bridged sessions was tombstoned
            later = [m for m in changelog if m.key()[8:] == b"bridge" and m.value() is None]
            assert [split_key(m.key())[0] for m in later] == [events[-3][2] - 1_000]
