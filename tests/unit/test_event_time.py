"""Event time → window: floored at exact boundaries (±1 µs), and ``take()`` batches writing
each event under its own time. Expectations come from a plain-Python reference over exact
fractions, never from the implementation."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest

from streamer import App, Stream
from streamer.clock import to_millis
from streamer.testing import TestDriver

T0 = 1_800_000_000  # a boundary of 10 s windows


def reference_start(seconds: float, size: int) -> float:
    """The window start of a time as the user wrote it (its shortest decimal form, exact)."""
    exact = Fraction(repr(seconds))
    return float((exact // size) * size)


def test_to_millis_floors_and_keeps_decimal_milliseconds() -> None:
    boundary = float(T0 + 240)
    assert to_millis(boundary) == (T0 + 240) * 1000
    assert to_millis(boundary - 1e-6) == (T0 + 240) * 1000 - 1  # 239.999999: the window before
    assert to_millis(boundary + 1e-6) == (T0 + 240) * 1000
    assert to_millis(T0 + 239.9999273) == (T0 + 239) * 1000 + 999  # the case
    rng = random.Random(7)
    for _ in range(20_000):
        millis = T0 * 1000 + rng.randrange(10**9)
        written = float(f"{millis // 1000}.{millis % 1000:03d}")  # e.g. 1800000123.100
        assert to_millis(written) == millis, written
        micro = written + rng.choice((-1, 1)) * 1e-6
        assert to_millis(micro) == int(Fraction(repr(micro)) * 1000 // 1), micro


def _app(event_time: bool) -> tuple[App, str]:
    app = App("evt-" + ("fn" if event_time else "ts"))
    src = app.topic(app.id + "-src", key_type=str, value_type=float, partitions=1)
    counts = app.table("counts", default=int, value_type=int).tumbling(
        10, grace=100, idle_close=None, event_time=(lambda e: e.value) if event_time else None
    )

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    return app, src.name


@pytest.mark.parametrize("event_time", [False, True], ids=["record-timestamp", "event_time"])
def test_exact_window_boundaries_floor(event_time: bool) -> None:
    times = []
    for boundary in range(T0 + 10, T0 + 60, 10):
        times += [boundary - 1e-6, float(boundary), boundary + 1e-6, boundary - 0.001]
    times += [T0 + 19.9999273, T0 + 29.9995, T0 + 30.0004999]
    random.Random(3).shuffle(times)  # out of order, within grace
    app, src = _app(event_time)

    async def scenario() -> dict[Any, Any]:
        async with TestDriver(app, start=T0 + 100) as driver:
            for at in times:
                await driver.send(src, key="k", value=at, timestamp=at)
            await driver.settle()
            return driver.table("counts")

    expected = Counter(("k", reference_start(at, 10)) for at in times)
    assert asyncio.run(scenario()) == dict(expected)


def test_take_batches_write_each_event_under_its_own_time() -> None:
    app = App("evt-take")
    src = app.topic("evt-take-src", key_type=str, value_type=str, partitions=1)
    counts = app.table("counts", default=int, value_type=int).tumbling(
        10, grace=100, idle_close=None
    )

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for batch in stream.take(100, within=0.5):
            for event in batch:
                counts[event.key] += 1

    rng = random.Random(11)
    offsets = [1, 2, 15] + [rng.uniform(0, 60) for _ in range(200)]

    async def scenario() -> dict[Any, Any]:
        async with TestDriver(app, start=T0 + 100) as driver:
            for delta in offsets:
                await driver.send(src.name, key="m", value="x", timestamp=T0 + delta)
            await driver.settle()
            await driver.advance(1)
            await driver.settle()
            return driver.table("counts")

    expected = Counter(("m", reference_start(T0 + delta, 10)) for delta in offsets)
    assert asyncio.run(scenario()) == dict(expected)
