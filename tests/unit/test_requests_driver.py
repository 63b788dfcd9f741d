"""Request-reply in the TestDriver: ``agent.ask`` against the in-memory broker."""

from __future__ import annotations

import pytest

import streamer
from streamer.testing import TestDriver


def _app() -> tuple[streamer.App, streamer.Agent]:
    app = streamer.App("rr-driver")
    requests = app.topic("requests", key_type=str, value_type=int, partitions=2)

    @app.agent(requests, reply_type=int)
    async def double(stream: streamer.Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            if event.value >= 0:
                yield streamer.Reply(event.value * 2)

    return app, double


def test_ask_in_the_driver_gets_the_reply_and_times_out_cleanly() -> None:
    app, double = _app()

    async def scenario(driver: TestDriver) -> None:
        assert await double.ask(key="a", value=21, timeout=10) == 42
        assert await double.ask(key="b", value=5, timeout=10) == 10
        with pytest.raises(streamer.RequestTimeout, match="no reply from agent 'double'"):
            await double.ask(key="c", value=-1, timeout=0.5)

    TestDriver.run(app, scenario)


def test_a_reply_to_an_event_that_is_no_request_is_dropped() -> None:
    app, _ = _app()

    async def scenario(driver: TestDriver) -> None:
        await driver.send("requests", key="a", value=1)
        await driver.settle()
        assert driver.raw("rr-driver-replies") == []

    TestDriver.run(app, scenario)


def test_the_decorator_returns_a_callable_agent() -> None:
    app, double = _app()
    assert isinstance(double, streamer.Agent) and app.agents == [double]


def test_replies_from_a_batch_answer_each_event() -> None:
    import asyncio

    app = streamer.App("rr-batch")
    requests = app.topic("requests", key_type=str, value_type=int, partitions=1)

    @app.agent(requests, reply_type=int)
    async def square(stream: streamer.Stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take(10, 0.05):
            for event in batch:
                yield streamer.Reply(event.value * event.value)

    async def scenario(driver: TestDriver) -> None:
        results = await asyncio.gather(
            *(square.ask(key="k", value=i, timeout=10) for i in range(5))
        )
        assert results == [i * i for i in range(5)]

    TestDriver.run(app, scenario)
