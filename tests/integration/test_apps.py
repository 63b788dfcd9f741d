"""The example apps in apps/, run by the real worker on the real broker."""

from __future__ import annotations

import asyncio
import importlib
import re
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

from streamer.serde import avro
from tests.kafkatools import (
    create_app_topics,
    observe_yields,
    produce,
    read_all,
    run_cli,
    run_until,
)


def _load(module: str, monkeypatch: pytest.MonkeyPatch, bootstrap: str, prefix: str) -> ModuleType:
    monkeypatch.setenv("STREAMER_BROKERS", bootstrap)
    monkeypatch.setenv("STREAMER_DEMO_PREFIX", prefix)
    return importlib.reload(importlib.import_module(module))


def test_wordcount(kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch) -> None:
    wordcount = _load("apps.wordcount", monkeypatch, kafka_bootstrap, unique_name("wc"))
    create_app_topics(wordcount.app)
    yielded: list[tuple[str, int]] = []
    observe_yields(wordcount.app, "split", yielded)
    lines = ["The cat sat.", "the CAT ran", "a dog"]
    produce(kafka_bootstrap, wordcount.lines.name, ((b"k", line.encode()) for line in lines))
    asyncio.run(run_until(wordcount.app, lambda: len(yielded) >= 8))
    counts: Counter[str] = Counter()
    for message in read_all(kafka_bootstrap, wordcount.words.name, expect=8):
        counts[message.key().decode()] += int(message.value())
    assert counts == Counter({"the": 2, "cat": 2, "sat": 1, "ran": 1, "a": 1, "dog": 1})


def test_orders(kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch) -> None:
    orders = _load("apps.orders", monkeypatch, kafka_bootstrap, unique_name("orders"))
    create_app_topics(orders.app)
    yielded: list[Any] = []
    observe_yields(orders.app, "republish", yielded)
    produce(
        kafka_bootstrap,
        orders.orders.name,
        [
            (b"ann", b'{"id": "o1", "customer": "ann", "amount": 12.5}'),
            (b"bob", b'{"id": "o2", "customer": "bob", "amount": -3}'),  # invalid: amount < 0
            (b"bob", b'{"id": "o3", "customer": "bob", "amount": 250, "note": "rush"}'),
        ],
    )
    asyncio.run(run_until(orders.app, lambda: len(yielded) >= 2))
    assert sorted(order.id for order in yielded) == ["o1", "o3"]
    serde = avro("order", model=orders.Order)
    republished = read_all(kafka_bootstrap, orders.orders_avro.name, expect=2)
    decoded = sorted((serde.deserialize(m.value()) for m in republished), key=lambda o: o.id)
    assert decoded == [
        orders.Order(id="o1", customer="ann", amount=12.5),
        orders.Order(id="o3", customer="bob", amount=250, note="rush"),
    ]
    large = read_all(kafka_bootstrap, orders.large_orders.name, expect=1)
    assert [(m.key(), m.value()) for m in large] == [(b"bob", b'{"id":"o3","amount":250.0}')]


def test_readme_send_command(
    kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `streamer send` line, as written (with this test's topic prefix)."""
    prefix = unique_name("readme")
    env = {"STREAMER_BROKERS": kafka_bootstrap, "STREAMER_DEMO_PREFIX": prefix}
    topic = f"{prefix}-lines"
    create_app_topics(_load("apps.wordcount", monkeypatch, kafka_bootstrap, prefix).app)
    result = run_cli(
        "send", topic, "--app", "apps.wordcount", "--key", "l1", "--value",
        "the quick brown fox", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"{topic}\[[0-3]\]@0", result.stdout.strip()), result.stdout
    assert result.stderr.strip().endswith(f"sent 1 record to {topic}")
    (message,) = read_all(kafka_bootstrap, topic, expect=1)
    assert (message.key(), message.value()) == (b"l1", b"the quick brown fox")
