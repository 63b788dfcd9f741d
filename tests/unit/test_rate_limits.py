"""Rate limits on simulated time (TestDriver): token buckets per agent and per key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import streamer
from streamer.ratelimit import Rate, TokenBucket, parse_rate
from streamer.testing import TestDriver


def test_rates_parse_and_bad_ones_say_how_to_write_them() -> None:
    assert parse_rate("100/s", "x") == Rate(100.0, "100/s")
    assert parse_rate("30/m", "x") == Rate(0.5, "30/m")
    assert parse_rate(None, "x") is None
    for bad in ("100", "0/s", "5/week", "fast"):
        with pytest.raises(streamer.ConfigError, match=r"e\.g\. '100/s'"):
            parse_rate(bad, "rate_limit")
    app = streamer.App("rl-bad")
    with pytest.raises(streamer.ConfigError, match="agent 'f': rate_limit_per_key="):

        @app.agent(app.topic("t"), rate_limit_per_key="5 per second")
        async def f(stream: streamer.Stream) -> None: ...


def test_a_bucket_reserves_slots_in_turn() -> None:
    now = [0.0]
    bucket = TokenBucket(Rate(2.0, "2/s"), lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0  # refilled, but never beyond one second's worth
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(20_000):  # loop turns, not time: the clock is simulated
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def test_per_key_limit_on_simulated_time_holds_a_key_not_the_others() -> None:
    app = streamer.App("rl-key")
    topic = app.topic("jobs", key_type=str, value_type=int, partitions=1)
    seen: list[tuple[str, int]] = []

    @app.agent(topic, rate_limit_per_key="2/s", concurrency=1)
    async def work(stream: streamer.Stream) -> None:
        async for event in stream:
            seen.append((event.key, event.value))

    async def scenario(driver: TestDriver) -> None:
        for i in range(5):
            await driver.send("jobs", key="a", value=i)
        await _until(lambda: len(seen) == 2)  # the burst: one second's worth
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(seen) == 2, "a key went past its limit while time stood still"
        await driver.clock.advance(0.5)
        await _until(lambda: len(seen) == 3)
        await driver.clock.advance(1.0)
        await _until(lambda: len(seen) == 5)
        assert seen == [("a", i) for i in range(5)]  # order kept
        await driver.send("jobs", key="b", value=9)  # another key, its own bucket
        await _until(lambda: ("b", 9) in seen)
        worker = driver._worker
        assert worker is not None
        text = worker.metrics.exposition().decode()
        assert 'streamer_rate_limited_seconds_total{agent="work"} 1.5' in text

    TestDriver.run(app, scenario)


def test_agent_limit_is_shared_by_its_lanes() -> None:
    app = streamer.App("rl-agent")
    topic = app.topic("jobs", key_type=str, value_type=int, partitions=2)
    seen: list[int] = []

    @app.agent(topic, rate_limit="1/s", concurrency=3)
    async def work(stream: streamer.Stream) -> None:
        async for event in stream:
            seen.append(event.value)

    async def scenario(driver: TestDriver) -> None:
        for i in range(4):
            await driver.send("jobs", key=f"k{i}", value=i)
        await _until(lambda: len(seen) == 1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(seen) == 1
        for expected in (2, 3, 4):
            await driver.clock.advance(1.0)
            await _until(lambda n=expected: len(seen) == n)  # type: ignore[misc]
        await driver.settle()

    TestDriver.run(app, scenario)
