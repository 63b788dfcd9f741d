"""A windowed table's changes as a stream (stream_to): every update, or each window once
when it closes (emit-final), on the TestDriver with simulated time and out-of-order input.
The expectations come from a plain-Python reference over the same input."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from streamer import App, Stream
from streamer.testing import TestDriver

T0 = 1_800_000_000
SIZE, GRACE = 10, 3


def _reference(
    events: list[tuple[str, float]],
) -> tuple[list[tuple[str, float, int]], dict[tuple[str, float], int]]:
    """(key, window start, count after the update) per applied event, in input order, and
    the final count of every window (one partition: one stream time)."""
    stream, counts = -1.0, Counter[tuple[str, float]]()
    updates = []
    for key, ts in events:
        stream = max(stream, ts)
        start = ts - ts % SIZE
        if start + SIZE + GRACE <= stream:
            continue  # late
        counts[key, start] += 1
        updates.append((key, start, counts[key, start]))
    return updates, dict(counts)


def test_updates_and_final_values_as_streams() -> None:
    app = App("changes")
    src = app.topic("changes-src", key_type=str, value_type=str, partitions=1)
    updates_topic = app.topic("changes-updates", key_type=str, value_type=dict)
    finals_topic = app.topic("changes-finals", key_type=str, value_type=dict)
    counts = app.table("counts", default=int, value_type=int).tumbling(
        SIZE, grace=GRACE, idle_close=5
    )
    updates = counts.stream_to(updates_topic)
    finals = counts.stream_to(finals_topic, final=True)
    seen: dict[str, list[tuple[str, float, int]]] = {"updates": [], "finals": []}

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    @app.agent(updates)
    async def watch(stream: Stream) -> None:
        async for event in stream:
            seen["updates"].append((event.key, event.value["start"], event.value["value"]))

    @app.agent(finals)
    async def final(stream: Stream) -> None:
        async for event in stream:
            assert event.value["end"] - event.value["start"] == SIZE
            seen["finals"].append((event.key, event.value["start"], event.value["value"]))

    rng = random.Random(4)
    events = []
    for i in range(300):
        ts = T0 + i * 0.2 - (rng.uniform(0, 6) if rng.random() < 0.2 else 0)
        events.append((rng.choice("abc"), round(ts, 3)))

    async def scenario() -> None:
        async with TestDriver(app, start=T0 + 100) as driver:
            for key, ts in events:
                await driver.send(src.name, key=key, value="x", timestamp=ts)
            await driver.settle()
            await driver.advance(60)  # idle: the last windows close by tick

    asyncio.run(scenario())
    expected_updates, expected_finals = _reference(events)
    assert seen["updates"] == expected_updates
    assert sorted(seen["finals"]) == sorted((k, s, n) for (k, s), n in expected_finals.items())
    assert counts.late_events == len(events) - len(expected_updates) > 0
