"""streamer.testing.TestDriver: the real worker over the in-memory broker, simulated time."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from streamer import AgentFailed, App, ErrorPolicy, SerializationError, Stream
from streamer.kafka.memory import murmur2, partition_for
from streamer.testing import TestDriver


def _app_module(name: str, monkeypatch: pytest.MonkeyPatch, prefix: str) -> ModuleType:
    monkeypatch.setenv("STREAMER_DEMO_PREFIX", prefix)
    return importlib.reload(importlib.import_module(name))


def test_murmur2_matches_java() -> None:
    # Values from Kafka's own UtilsTest (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107
    assert partition_for(b"abc", 4) == 479470107 % 4


def test_wordcount(monkeypatch: pytest.MonkeyPatch) -> None:
    wordcount = _app_module("apps.wordcount", monkeypatch, "drv-wc")

    async def scenario() -> list[tuple[str, int]]:
        async with TestDriver(wordcount.app) as driver:
            for line in ["The cat sat.", "the CAT ran", "a dog"]:
                await driver.send(wordcount.lines.name, key="k", value=line)
            await driver.settle()
            return driver.records(wordcount.words.name)

    words = asyncio.run(scenario())
    counts: Counter[str] = Counter()
    for word, count in words:
        counts[word] += count
    assert counts == Counter({"the": 2, "cat": 2, "sat": 1, "ran": 1, "a": 1, "dog": 1})
    # One key, one partition, one lane: the words of a line come out in order.
    assert [w for w, _ in words] == ["the", "cat", "sat", "the", "cat", "ran", "a", "dog"]


def test_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    orders = _app_module("apps.orders", monkeypatch, "drv-orders")
    Order = orders.Order

    async def scenario() -> dict[str, list[tuple[Any, Any]]]:
        async with TestDriver(orders.app) as driver:
            await driver.send(
                orders.orders.name, key="ann", value=Order(id="o1", customer="ann", amount=12.5)
            )
            # A record that would fail serialization fails at send, as in production.
            with pytest.raises(SerializationError):
                await driver.send(orders.orders.name, key="bob", value={"not": "an order"})
            await driver.send(
                orders.orders.name,
                key="bob",
                value=Order(id="o3", customer="bob", amount=250, note="rush"),
            )
            await driver.settle()
            return {
                name: driver.records(name)
                for name in (orders.orders_avro.name, orders.large_orders.name)
            }

    out = asyncio.run(scenario())
    assert sorted((o.id for _, o in out[orders.orders_avro.name])) == ["o1", "o3"]
    assert out[orders.large_orders.name] == [("bob", {"id": "o3", "amount": 250.0})]


def test_undecodable_record_goes_to_the_dead_letter_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    orders = _app_module("apps.orders", monkeypatch, "drv-orders-dlq")
    agent = orders.app.agents[0]
    dlq = orders.app.dead_letter_topic(agent)

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with TestDriver(orders.app) as driver:
            # Raw bytes that decode to no valid Order: the partition goes on, the record is
            # dead-lettered, exactly as the worker does it on a real broker.
            driver.broker.append(orders.orders.name, 0, _raw(b"bob", b'{"id": "o2", "amount": -3}'))
            await driver.send(
                orders.orders.name, key="ann", value=orders.Order(id="o1", customer="ann", amount=1)
            )
            await driver.settle()
            return driver.records(dlq), driver.records(orders.orders_avro.name)

    dead, good = asyncio.run(scenario())
    assert dead == [(b"bob", b'{"id": "o2", "amount": -3}')]
    assert [o.id for _, o in good] == ["o1"]


def _raw(key: bytes, value: bytes) -> Any:
    from streamer.kafka.memory import Record

    return Record(key, value, None, round(time.time() * 1000), -1)


def test_poison_record_exhausts_retries_into_the_dead_letter_topic() -> None:
    app = App("drv-poison", on_error=ErrorPolicy(retries=2, backoff=0.001, jitter=0))
    src = app.topic("drv-poison-src", key_type=str, value_type=int, partitions=2)
    out = app.topic("drv-poison-out", key_type=str, value_type=int, partitions=2)
    attempts: Counter[int] = Counter()

    @app.agent(src, sink=[out])
    async def double(stream: Stream) -> AsyncIterator[int]:
        async for event in stream:
            attempts[event.value] += 1
            if event.value == 13:
                raise RuntimeError("unlucky")
            yield event.value * 2

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with TestDriver(app) as driver:
            for i in (1, 13, 2):
                await driver.send(src.name, key="k", value=i)
            await driver.settle()
            dlq = app.dead_letter_topic(app.agents[0])
            return driver.records(out.name), driver.records(dlq), driver.raw(dlq)

    outputs, dead, raw = asyncio.run(scenario())
    assert outputs == [("k", 2), ("k", 4)]
    assert dead == [(b"k", b"13")]
    assert attempts[13] == 3  # the first try and two retries
    headers = dict(raw[0].headers)
    assert headers["streamer.error.type"] == b"RuntimeError"
    assert headers["streamer.attempts"] == b"3"


def test_tumbling_window_closes_on_simulated_time() -> None:
    app = App("drv-windows")
    src = app.topic("drv-windows-src", key_type=str, value_type=str, partitions=2)
    closed = app.topic("drv-windows-closed", key_type=str, value_type=dict)

    async def emit(key: str, start: float, end: float, value: int) -> None:
        await closed.send(key=key, value={"start": start, "end": end, "count": value})

    counts = app.table("counts", default=int, value_type=int).tumbling(
        60, idle_close=30, on_close=emit
    )

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    t0 = 1_800_000_000.0  # a window boundary (divisible by 60)

    async def scenario() -> tuple[list[Any], list[Any], dict[Any, Any]]:
        async with TestDriver(app, start=t0 + 10) as driver:
            for key, at in [("a", t0 + 1), ("a", t0 + 5), ("b", t0 + 7)]:
                await driver.send(src.name, key=key, value="x", timestamp=at)
            await driver.settle()
            await driver.advance(20)  # idle for less than idle_close: still open
            before = driver.records(closed.name)
            table = driver.table("counts")  # open windows (closed ones expire later)
            await driver.advance(120)  # simulated: nothing really waits two minutes
            return before, driver.records(closed.name), table

    started = time.monotonic()
    before, after, table = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert before == []
    assert sorted(after) == [
        ("a", {"start": t0, "end": t0 + 60, "count": 2}),
        ("b", {"start": t0, "end": t0 + 60, "count": 1}),
    ]
    assert table == {("a", t0): 2, ("b", t0): 1}
    # Simulated: had either advance really waited, the test would have taken 20 s at least.
    assert elapsed < 20, f"the window test took {elapsed:.2f}s: simulated time was waited"


def test_timer_fires_on_simulated_time() -> None:
    app = App("drv-timers")
    src = app.topic("drv-timers-src", key_type=str, value_type=str)
    ticks = app.topic("drv-timers-ticks", key_type=str, value_type=float)
    clock_reads: list[float] = []

    @app.agent(src)
    async def idle(stream: Stream) -> None:
        async for _ in stream:
            pass

    @app.timer(10)
    async def tick() -> None:
        clock_reads.append(time.monotonic())
        await ticks.send(key="tick", value=float(len(clock_reads)))

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with TestDriver(app) as driver:
            await driver.advance(5)
            early = driver.records(ticks.name)
            await driver.advance(30)  # due at 10, 20, 30
            return early, driver.records(ticks.name)

    started = time.monotonic()
    early, late = asyncio.run(scenario())
    assert early == []
    assert late == [("tick", 1.0), ("tick", 2.0), ("tick", 3.0)]
    # Simulated: had either advance really waited, the test would have taken 5 s at least.
    assert time.monotonic() - started < 5, "simulated time was waited"


def test_cron_timer_on_simulated_time_through_the_sync_helper() -> None:
    app = App("drv-cron")
    src = app.topic("drv-cron-src", key_type=str, value_type=str)
    fired: list[float] = []

    @app.agent(src)
    async def idle(stream: Stream) -> None:
        async for _ in stream:
            pass

    @app.crontab("* * * * *")
    async def every_minute() -> None:
        fired.append(time.monotonic())

    async def scenario(driver: TestDriver) -> tuple[int, int]:
        await driver.advance(49)  # :01 -> :50, no minute boundary crossed
        before = len(fired)
        await driver.advance(130)  # :50 -> 3:00, past the boundaries at 1:00, 2:00, 3:00
        return before, len(fired)

    t0 = 1_800_000_000.0  # a minute boundary
    assert TestDriver.run(app, scenario, start=t0 + 1) == (0, 3)


def test_prefilled_table_and_exactly_once() -> None:
    app = App("drv-table", processing_guarantee="exactly_once")
    src = app.topic("drv-table-src", key_type=str, value_type=int, partitions=3)
    out = app.topic("drv-table-out", key_type=str, value_type=int, partitions=3)
    totals = app.table("totals", default=int, value_type=int)

    @app.agent(src, sink=[out], concurrency=2)
    async def add(stream: Stream) -> AsyncIterator[tuple[str, int]]:
        async for event in stream:
            totals[event.key] += event.value
            yield event.key, totals[event.key]

    async def scenario() -> tuple[list[Any], dict[Any, Any], int]:
        driver = TestDriver(app)
        driver.set_table("totals", {"ann": 100, "bob": 5})
        async with driver:
            for key, amount in [("ann", 1), ("bob", 2), ("cid", 3), ("ann", 4)]:
                await driver.send(src.name, key=key, value=amount)
            await driver.settle()
            markers = sum(
                1 for log in driver.broker.topics[out.name] for record in log if record.control
            )
            return driver.records(out.name), driver.table("totals"), markers

    outputs, table, markers = asyncio.run(scenario())
    assert table == {"ann": 105, "bob": 7, "cid": 3}
    assert sorted(outputs) == [("ann", 101), ("ann", 105), ("bob", 7), ("cid", 3)]
    assert [v for k, v in outputs if k == "ann"] == [101, 105]  # per-key order kept
    assert markers >= 1  # outputs went through transactions


def test_send_to_an_undeclared_topic_is_refused() -> None:
    app = App("drv-undeclared")
    src = app.topic("drv-undeclared-src", key_type=str, value_type=str)

    @app.agent(src)
    async def noop(stream: Stream) -> None:
        async for _ in stream:
            pass

    async def scenario() -> None:
        async with TestDriver(app) as driver:
            await driver.send("nope", key="k", value="v")

    with pytest.raises(Exception, match="not declared"):
        asyncio.run(scenario())
    assert app.settings.brokers != "" and not app.settings.brokers.startswith("memory://")


def test_stop_policy_stops_the_worker_and_the_driver_says_why() -> None:
    app = App("drv-stop", on_error=ErrorPolicy(retries=0, on_exhausted="stop"))
    src = app.topic("drv-stop-src", key_type=str, value_type=int)

    @app.agent(src)
    async def fragile(stream: Stream) -> None:
        async for event in stream:
            if event.value == 13:
                raise RuntimeError("unlucky")

    async def scenario(driver: TestDriver) -> None:
        await driver.send(src.name, key="k", value=13)
        await driver.settle()

    with pytest.raises(AgentFailed, match="unlucky"):
        TestDriver.run(app, scenario)


def test_the_app_is_not_changed_and_outside_sends_reach_the_driver() -> None:
    app = App("untouched", brokers="real-broker:9092")
    source = app.topic("in", key_type=str, value_type=str)
    out = app.topic("out", key_type=str, value_type=str)

    @app.agent(source, sink=[out])
    async def echo(stream: Stream) -> AsyncIterator[str]:
        async for event in stream:
            yield event.value

    settings, backend = app.settings, app.backend

    async def scenario(driver: TestDriver) -> list[tuple[Any, Any]]:
        assert app.settings is settings and app.backend is backend  # while it runs, too
        assert driver.settings.brokers != settings.brokers
        await source.send(key="k", value="from the test's own code")  # outside any agent
        await driver.settle()
        return driver.records(out.name)

    assert TestDriver.run(app, scenario) == [("k", "from the test's own code")]
    assert app.settings is settings and app.backend is backend
    assert source.outside.backend is backend  # the redirection ended with the driver


def test_a_bare_yield_in_a_batch_keeps_the_key_of_the_event_the_loop_is_at() -> None:
    app = App("batch-keys")
    src = app.topic("src", key_type=str, value_type=int, partitions=1)
    dst = app.topic("dst", key_type=str, value_type=int, partitions=1)
    sums = app.topic("sums", key_type=str, value_type=int, partitions=1)

    @app.agent(src, sink=[dst])
    async def double(stream: Stream) -> AsyncIterator[int]:
        async for batch in stream.take(10, 0.5):
            for event in batch:
                yield event.value * 2

    @app.agent(src, sink=[sums])
    async def total(stream: Stream) -> AsyncIterator[int]:
        async for batch in stream.take(10, 0.5):
            yield sum(event.value for event in batch[:-1]) + batch[-1].value  # indexed

    async def scenario(driver: TestDriver) -> None:
        for i in range(5):
            await driver.send("src", key=f"k{i}", value=i)
        await driver.settle()
        assert driver.records("dst") == [(f"k{i}", i * 2) for i in range(5)]
        # Not iterated through the batch itself: the key is the batch's last event's.
        assert [key for key, _ in driver.records("sums")] == ["k4"] * len(driver.records("sums"))
        assert sum(value for _, value in driver.records("sums")) == 10

    TestDriver.run(app, scenario)
