"""The in-memory TestDriver and the real broker agree: for each app in apps/, one scenario
run through both gives the same records on every topic (as multisets of key and value bytes)
and the same table contents."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from streamer import App, Stream
from streamer.kafka.memory import Record
from streamer.testing import TestDriver
from tests.kafkatools import (
    committed,
    create_app_topics,
    end_offsets,
    produce,
    read_all,
    run_until,
)

Scenario = list[tuple[str, bytes | None, bytes]]  # (topic, key, value), as raw bytes
Outputs = dict[str, Counter[tuple[bytes | None, bytes | None]]]


def _load(module: str, monkeypatch: pytest.MonkeyPatch, bootstrap: str, prefix: str) -> ModuleType:
    monkeypatch.setenv("STREAMER_BROKERS", bootstrap)
    monkeypatch.setenv("STREAMER_DEMO_PREFIX", prefix)
    return importlib.reload(importlib.import_module(module))


def _outputs(app: App) -> list[str]:
    """Every topic the app writes: declared topics it does not read, and dead letters."""
    read = {t.name for a in app.agents for t in a.topics}
    written = [name for name in app.topics if name not in read]
    return sorted({*written, *(app.dead_letter_topic(a) for a in app.agents)})


def _through_driver(app: App, scenario: Scenario) -> tuple[Outputs, dict[str, Any]]:
    async def run() -> tuple[Outputs, dict[str, Any]]:
        async with TestDriver(app) as driver:
            for topic, key, value in scenario:
                # Raw bytes, as the real run produces them: same partitioning (murmur2).
                where = driver.broker.partition_of(topic, key, -1)
                driver.broker.append(topic, where, Record(key, value, None, 0, -1))
            await driver.settle()
            outputs = {
                name: Counter((r.key, r.value) for r in driver.raw(name)) for name in _outputs(app)
            }
            return outputs, {name: driver.table(name) for name in app.tables}

    return asyncio.run(run())


def _through_broker(app: App, bootstrap: str, scenario: Scenario) -> Outputs:
    create_app_topics(app)
    for topic in {t for t, _, _ in scenario}:
        produce(bootstrap, topic, [(k, v) for t, k, v in scenario if t == topic])
    sources = {t.name: t.partitions or 1 for a in app.agents for t in a.topics}
    ends = {name: end_offsets(bootstrap, name, count) for name, count in sources.items()}
    last_check = [0.0]

    def done() -> bool:
        # Everything read is committed: under at-least-once every output was flushed first.
        # Checked at most twice a second (each check is a short blocking call).
        if time.monotonic() - last_check[0] < 0.5:
            return False
        last_check[0] = time.monotonic()
        for name, count in sources.items():
            offsets = committed(bootstrap, app.group_id, name, count)
            # An empty partition has no committed offset (-1001): nothing to wait for.
            if any(end and offsets[p] < end for p, end in ends[name].items()):
                return False
        return True

    asyncio.run(run_until(app, done, timeout=120))
    return {
        name: Counter((m.key(), m.value()) for m in read_all(bootstrap, name, idle=1.0))
        for name in _outputs(app)
    }


def _assert_same(driver: Outputs, broker: Outputs) -> None:
    for name in sorted(set(driver) | set(broker)):
        assert driver.get(name, Counter()) == broker.get(name, Counter()), name


def test_wordcount_parity(
    kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    wordcount = _load("apps.wordcount", monkeypatch, kafka_bootstrap, unique_name("wcp"))
    scenario: Scenario = [
        (wordcount.lines.name, key, line)
        for key, line in [(b"k", b"The cat sat."), (b"j", b"the CAT ran"), (None, b"a dog, a cat")]
    ]
    in_memory, tables = _through_driver(wordcount.app, scenario)
    assert sum(in_memory[wordcount.words.name].values()) == 10
    _assert_same(in_memory, _through_broker(wordcount.app, kafka_bootstrap, scenario))
    assert tables == {}  # wordcount is stateless: nothing to compare


def test_orders_parity(kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch) -> None:
    orders = _load("apps.orders", monkeypatch, kafka_bootstrap, unique_name("ordp"))
    scenario: Scenario = [
        (orders.orders.name, key, value)
        for key, value in [
            (b"ann", b'{"id": "o1", "customer": "ann", "amount": 12.5}'),
            (b"bob", b'{"id": "o2", "customer": "bob", "amount": -3}'),  # invalid: amount < 0
            (b"bob", b'{"id": "o3", "customer": "bob", "amount": 250, "note": "rush"}'),
            (b"cid", b'{"id": "o4", "customer": "cid", "amount": 100}'),
        ]
    ]
    in_memory, tables = _through_driver(orders.app, scenario)
    assert sum(in_memory[orders.orders_avro.name].values()) == 3
    assert sum(in_memory[orders.large_orders.name].values()) == 2
    assert sum(in_memory[orders.app.dead_letter_topic(orders.app.agents[0])].values()) == 1
    _assert_same(in_memory, _through_broker(orders.app, kafka_bootstrap, scenario))
    assert tables == {}  # orders keeps no table


def test_table_parity(kafka_bootstrap: str, unique_name, tmp_path: Any) -> None:
    """Neither app in apps/ keeps a table: this scenario compares table contents (the
    driver's table against the real run's changelog, last value per key) and outputs."""
    name = unique_name("tblp")
    app = App(name, brokers=kafka_bootstrap, state_dir=tmp_path, commit_interval=0.5)
    source = app.topic(f"{name}-src", key_type=str, value_type=int, partitions=3)
    out = app.topic(f"{name}-out", key_type=str, value_type=int, partitions=3)
    totals = app.table("totals", default=int, value_type=int)

    @app.agent(source, sink=[out], concurrency=2)
    async def add(stream: Stream) -> AsyncIterator[tuple[str, int]]:
        async for event in stream:
            totals[event.key] += event.value
            yield event.key, totals[event.key]

    scenario: Scenario = [
        (source.name, key.encode(), str(amount).encode())
        for key, amount in [("ann", 1), ("bob", 2), ("cid", 3), ("ann", 4), ("bob", 5), ("dan", 6)]
    ]
    in_memory, tables = _through_driver(app, scenario)
    assert tables == {"totals": {"ann": 5, "bob": 7, "cid": 3, "dan": 6}}
    _assert_same(in_memory, _through_broker(app, kafka_bootstrap, scenario))
    changelog: dict[Any, Any] = {}
    for message in read_all(kafka_bootstrap, totals.changelog, idle=1.0):
        changelog[totals.key_serde.deserialize(message.key())] = totals.value_serde.deserialize(
            message.value()
        )
    assert changelog == tables["totals"]
