"""Non-blocking retries in the TestDriver (simulated time): a failed event goes to the
agent's retry topics and comes back when due, while later events of its key go on."""

from __future__ import annotations

from datetime import timedelta

import pytest

import streamer
from streamer.testing import TestDriver

POLICY = streamer.ErrorPolicy(
    retry_topics=[timedelta(seconds=30), timedelta(minutes=5)], on_exhausted="dead_letter"
)


def _app(fail_times: dict[int, int]) -> tuple[streamer.App, list[tuple[str, int, str]]]:
    app = streamer.App("rt-driver")
    src = app.topic("src", key_type=str, value_type=int, partitions=2)
    done: list[tuple[str, int, str]] = []

    @app.agent(src, on_error=POLICY)
    async def work(stream: streamer.Stream) -> None:
        async for event in stream:
            if fail_times.get(event.value, 0) > 0:
                fail_times[event.value] -= 1
                raise RuntimeError(f"not yet: {event.value}")
            done.append((event.key, event.value, event.topic))

    return app, done


def test_a_failed_event_comes_back_from_each_retry_topic_when_due() -> None:
    app, done = _app({1: 2})

    async def scenario(driver: TestDriver) -> None:
        await driver.send("src", key="k", value=1)
        await driver.send("src", key="k", value=2)
        await driver.settle()
        # Not held behind the failed one: the trade-off of non-blocking retries.
        assert done == [("k", 2, "src")]
        assert [v for _, v in driver.records("rt-driver-work-retry-1")] == [1]
        reason = dict(driver.raw("rt-driver-work-retry-1")[0].headers or [])
        assert reason["streamer.retry.reason"] == b"RuntimeError: not yet: 1"
        await driver.advance(29)
        assert len(done) == 1
        await driver.advance(1)  # fails again: on to retry topic 2, five minutes
        assert [v for _, v in driver.records("rt-driver-work-retry-2")] == [1]
        await driver.advance(299)
        assert len(done) == 1
        await driver.advance(1)
        assert done == [("k", 2, "src"), ("k", 1, "rt-driver-work-retry-2")]
        assert driver.records("rt-driver-work-dlq") == []

    TestDriver.run(app, scenario)


def test_a_failure_in_the_last_retry_topic_is_dead_lettered() -> None:
    app, done = _app({1: 3})

    async def scenario(driver: TestDriver) -> None:
        await driver.send("src", key="k", value=1)
        await driver.settle()
        await driver.advance(30)
        await driver.advance(300)
        assert done == []
        (letter,) = driver.raw("rt-driver-work-dlq")
        headers = dict(letter.headers or [])
        assert headers["streamer.source.topic"] == b"rt-driver-work-retry-2"

    TestDriver.run(app, scenario)


def test_retry_topics_must_be_positive_delays() -> None:
    with pytest.raises(streamer.ConfigError, match="positive delays"):
        streamer.ErrorPolicy(retry_topics=[30])  # type: ignore[list-item]


def test_retry_topics_refuse_tables() -> None:
    app, _ = _app({})
    app.table("t")

    async def scenario(driver: TestDriver) -> None: ...

    with pytest.raises(streamer.ConfigError, match="use blocking retries"):
        TestDriver.run(app, scenario)
