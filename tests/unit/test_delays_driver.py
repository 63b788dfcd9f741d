"""Delayed delivery in the TestDriver: simulated time releases delayed records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import streamer
from streamer.testing import TestDriver


def _app() -> streamer.App:
    app = streamer.App("dd-driver", delayed_delivery=True)
    src = app.topic("src", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)

    @app.agent(src)
    async def later(stream: streamer.Stream) -> None:
        async for event in stream:
            await out.send(key=event.key, value=event.value, delay=timedelta(seconds=30),
                           headers=[("h", b"1")])  # fmt: skip

    return app


def test_records_sent_with_a_delay_arrive_when_due_and_not_before() -> None:
    app = _app()

    async def scenario(driver: TestDriver) -> None:
        await driver.send("src", key="a", value=1)
        await driver.settle()
        assert driver.records("out") == []
        await driver.advance(20)
        assert driver.records("out") == []
        await driver.send("src", key="b", value=2)  # a is due at 30 s, b at 50 s
        await driver.advance(10)
        assert driver.records("out") == [("a", 1)]
        await driver.advance(20)
        assert sorted(driver.records("out")) == [("a", 1), ("b", 2)]
        assert all(r.headers == [("h", b"1")] for r in driver.raw("out"))

    TestDriver.run(app, scenario)


def test_deliver_at_from_outside_a_worker() -> None:
    app = _app()

    async def scenario(driver: TestDriver) -> None:
        now = driver.clock.time()
        at = datetime.fromtimestamp(now + 3600, UTC)
        await app.topics["out"].send(key="x", value=7, deliver_at=at)
        await driver.advance(3599)
        assert driver.records("out") == []
        await driver.advance(1)
        assert driver.records("out") == [("x", 7)]

    TestDriver.run(app, scenario)


def test_delayed_sends_need_the_delay_topic() -> None:
    asyncio.run(_need_the_delay_topic())


async def _need_the_delay_topic() -> None:
    app = streamer.App("dd-off")
    out = app.topic("out", key_type=str, value_type=int)
    with pytest.raises(streamer.ConfigError, match=r"App\(\.\.\., delayed_delivery=True\)"):
        await out.send(key="a", value=1, delay=timedelta(seconds=1))
    app = streamer.App("dd-on", delayed_delivery=True)
    out = app.topic("out", key_type=str, value_type=int)
    with pytest.raises(streamer.ConfigError, match="not both"):
        await out.send(key="a", value=1, delay=timedelta(seconds=1), deliver_at=datetime.now(UTC))
