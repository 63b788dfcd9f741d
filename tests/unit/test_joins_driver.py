"""Stream-table joins (``app.table_from``) over the in-memory broker: each order sees the
customer version in effect at its timestamp, computed independently below."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamer import App, Stream
from streamer.errors import ConfigError, StreamerError
from streamer.testing import TestDriver


def expected_enrichment(
    customers: list[tuple[str, str | None, float]], orders: list[tuple[str, str, float]]
) -> list[tuple[str, str | None]]:
    """Plain Python: for each order (id, customer, ts), the newest customer value with a
    timestamp not after the order's (None when absent or deleted)."""
    out = []
    for order_id, customer, ts in orders:
        seen = [(t, v) for k, v, t in customers if k == customer and t <= ts]
        out.append((order_id, max(seen)[1] if seen else None))
    return out


def make_app(guarantee: str = "exactly_once") -> tuple[App, Any]:
    app = App("drv-join", processing_guarantee=guarantee)
    customers_t = app.topic("drv-customers", key_type=str, value_type=str, partitions=3)
    orders_t = app.topic("drv-orders", key_type=str, value_type=dict, partitions=3)
    enriched = app.topic("drv-enriched", key_type=str, value_type=dict, partitions=3)
    customers = app.table_from(customers_t)

    @app.agent(orders_t, sink=[enriched], concurrency=2)
    async def enrich(stream: Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for event in stream:
            yield event.key, {"order": event.value["id"], "customer": customers.get(event.key)}

    return app, customers


def test_orders_see_the_customer_version_in_effect_at_their_time() -> None:
    app, _ = make_app()
    customer_log: list[tuple[str, str | None, float]] = []
    order_log: list[tuple[str, str, float]] = []
    base = 1_700_000_000.0

    async def scenario() -> tuple[list[Any], dict[Any, Any]]:
        async with TestDriver(app) as driver:
            step = 0
            for round_ in range(4):
                for name in ("ann", "bob", "cid", "dan"):
                    step += 1
                    version = f"{name}-v{round_}"
                    value = None if (name == "dan" and round_ == 2) else version
                    customer_log.append((name, value, base + step))
                    await driver.send("drv-customers", key=name, value=value,
                                      timestamp=base + step)  # fmt: skip
                    step += 1
                    order_id = f"o{step}"
                    order_log.append((order_id, name, base + step))
                    await driver.send("drv-orders", key=name, value={"id": order_id},
                                      timestamp=base + step)  # fmt: skip
            # An order stamped before the last update of its customer, sent after it: it
            # sees the version in effect at its own time, not the newest.
            order_log.append(("late", "ann", base + 20.5))
            await driver.send("drv-orders", key="ann", value={"id": "late"},
                              timestamp=base + 20.5)  # fmt: skip
            await driver.settle()
            return driver.records("drv-enriched"), driver.table("drv-customers-table")

    outputs, table = asyncio.run(scenario())
    got = sorted((v["order"], v["customer"]) for _, v in outputs)
    assert got == sorted(expected_enrichment(customer_log, order_log))
    assert ("late", "ann-v2") in got  # not ann-v3 (stamped after the order)
    assert len(outputs) == len(order_log)  # each order enriched once
    assert table == {"ann": "ann-v3", "bob": "bob-v3", "cid": "cid-v3", "dan": "dan-v3"}


def test_a_table_from_a_topic_is_read_only() -> None:
    app = App("drv-join-ro")
    src = app.topic("drv-ro-src", key_type=str, value_type=str, partitions=2)
    orders = app.topic("drv-ro-orders", key_type=str, value_type=str, partitions=2)
    table = app.table_from(src)
    failures: list[BaseException] = []

    @app.agent(orders)
    async def write(stream: Stream) -> None:
        async for event in stream:
            try:
                table[event.key] = "x"
            except StreamerError as exc:
                failures.append(exc)

    async def scenario() -> None:
        async with TestDriver(app) as driver:
            await driver.send(orders.name, key="k", value="v")
            await driver.settle()

    asyncio.run(scenario())
    assert failures and "changes only with that topic" in str(failures[0])


def test_copartitioning_mismatch_names_both_counts() -> None:
    app = App("drv-join-bad")
    customers = app.topic("drv-bad-customers", key_type=str, value_type=str, partitions=4)
    orders = app.topic("drv-bad-orders", key_type=str, value_type=str, partitions=6)
    app.table_from(customers)

    @app.agent(orders)
    async def use(stream: Stream) -> None:
        async for _ in stream:
            pass

    async def scenario() -> None:
        async with TestDriver(app):
            pass

    with pytest.raises(ConfigError, match=r"\(4 partitions\).*\(6 partitions\)"):
        asyncio.run(scenario())


def test_global_table_lookup_by_foreign_key() -> None:
    """Orders keyed by order id look their customer up by a field (a foreign key) in a
    global table: restored before any order is processed, then kept up to date."""
    app = App("drv-global", processing_guarantee="exactly_once")
    orders = app.topic("drv-g-orders", key_type=str, value_type=dict, partitions=3)
    out = app.topic("drv-g-out", key_type=str, value_type=dict, partitions=3)
    customers = app.global_table("drv-g-customers", value_type=str)
    seen_at_first: list[int] = []

    @app.agent(orders, sink=[out])
    async def enrich(stream: Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for event in stream:
            if not seen_at_first:
                seen_at_first.append(len(customers.as_dict()))
            yield event.key, {"customer": customers.get(event.value["customer"])}

    async def scenario() -> tuple[list[Any], dict[Any, Any]]:
        driver = TestDriver(app)
        driver.broker.create_topic("drv-g-customers", 2)
        for c in range(5):  # before the worker starts: restored, not followed
            await driver.send("drv-g-customers", key=f"c{c}", value=f"c{c}-v0")
        async with driver:
            await driver.send(orders.name, key="o1", value={"customer": "c1"})
            await driver.settle()
            await driver.send("drv-g-customers", key="c1", value="c1-v1")
            await driver.settle()
            await driver.send(orders.name, key="o2", value={"customer": "c1"})
            await driver.send(orders.name, key="o3", value={"customer": "zz"})
            await driver.settle()
            return driver.records(out.name), customers.as_dict()

    outputs, table = asyncio.run(scenario())
    assert sorted(outputs) == [
        ("o1", {"customer": "c1-v0"}),
        ("o2", {"customer": "c1-v1"}),
        ("o3", {"customer": None}),
    ]
    assert seen_at_first == [5]
    assert table["c1"] == "c1-v1"


def test_enrich_example_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """apps/enrich.py over the in-memory broker: a customer changed between two orders."""
    import importlib

    monkeypatch.setenv("STREAMER_DEMO_PREFIX", "drv-enrich")
    enrich = importlib.reload(importlib.import_module("apps.enrich"))
    t0 = 1_700_000_000.0

    async def scenario() -> list[Any]:
        driver = TestDriver(enrich.app)
        driver.broker.create_topic("drv-enrich-products", 1)
        await driver.send("drv-enrich-products", key="p1", value={"title": "Mug", "price": 9.5})
        async with driver:
            for topic, key, value, ts in [
                ("drv-enrich-customers", "ann", {"tier": "silver"}, t0),
                ("drv-enrich-shop-orders", "ann", {"id": "o1", "product": "p1", "qty": 2}, t0 + 1),
                ("drv-enrich-customers", "ann", {"tier": "gold"}, t0 + 2),
                ("drv-enrich-shop-orders", "ann", {"id": "o2", "product": "p1"}, t0 + 3),
            ]:
                await driver.send(topic, key=key, value=value, timestamp=ts)
            await driver.settle()
            return driver.records("drv-enrich-enriched-orders")

    outputs = asyncio.run(scenario())
    by_id = {value["id"]: value for _, value in outputs}
    assert by_id["o1"]["customer"] == {"tier": "silver"}
    assert by_id["o1"]["total"] == 19.0
    assert by_id["o2"]["customer"] == {"tier": "gold"}
    assert by_id["o2"]["title"] == "Mug"


def expected_pairs(
    payments: list[tuple[str, str, float]], refunds: list[tuple[str, str, float]], within: float
) -> list[tuple[str, str]]:
    """Plain Python: every (payment, refund) of one key stamped at most ``within`` apart."""
    return sorted(
        (p, r)
        for pk, p, pt in payments
        for rk, r, rt in refunds
        if pk == rk and abs(pt - rt) <= within
    )


def test_windowed_stream_stream_join_pairs_each_match_once() -> None:
    import random

    app = App("drv-ssjoin", processing_guarantee="exactly_once")
    payments = app.topic("drv-payments", key_type=str, value_type=str, partitions=3)
    refunds = app.topic("drv-refunds", key_type=str, value_type=str, partitions=3)
    matched = app.topic("drv-matched", key_type=str, value_type=dict, partitions=3)
    join = app.join(payments, refunds, within=60, grace=300, sink=matched,
                    joiner=lambda p, r: {"payment": p, "refund": r})  # fmt: skip
    rng = random.Random(7)
    base = 1_700_000_000.0
    sent_payments: list[tuple[str, str, float]] = []
    sent_refunds: list[tuple[str, str, float]] = []
    records: list[tuple[str, str, str, float]] = []
    for i in range(120):
        key = f"k{rng.randrange(6)}"
        t = base + i * 10
        sent_payments.append((key, f"p{i}", t))
        records.append((payments.name, key, f"p{i}", t))
        if rng.random() < 0.7:  # a refund inside or outside the window, early or late
            rt = t + rng.uniform(-90, 90)
            sent_refunds.append((key, f"r{i}", rt))
            records.append((refunds.name, key, f"r{i}", rt))
    # Out of order by up to 30 s of event time (within the grace): still joined.
    records.sort(key=lambda r: r[3] + rng.uniform(0, 30))

    async def scenario() -> list[Any]:
        async with TestDriver(app) as driver:
            for topic, key, value, ts in records:
                await driver.send(topic, key=key, value=value, timestamp=ts)
            await driver.settle()
            # Far behind stream time (more than within + grace): dropped, never paired.
            await driver.send(refunds.name, key="k0", value="too-late", timestamp=base)
            await driver.settle()
            return driver.records(matched.name)

    outputs = asyncio.run(scenario())
    got = sorted((v["payment"], v["refund"]) for _, v in outputs)
    assert got == expected_pairs(sent_payments, sent_refunds, 60)
    assert len(got) == len(set(got))  # each pair once
    assert join.late == 1
    assert all(key == next(k for k, p, _ in sent_payments if p == v["payment"])
               for key, v in outputs)  # fmt: skip


def test_a_joined_topic_read_by_another_agent_is_refused() -> None:
    app = App("drv-ssjoin-bad")
    left = app.topic("drv-bad-left", key_type=str, value_type=str, partitions=2)
    right = app.topic("drv-bad-right", key_type=str, value_type=str, partitions=2)
    out = app.topic("drv-bad-out", key_type=str, value_type=dict, partitions=2)
    app.join(left, right, within=10, sink=out)

    @app.agent(left)
    async def also(stream: Stream) -> None:
        async for _ in stream:
            pass

    async def scenario() -> None:
        async with TestDriver(app):
            pass

    with pytest.raises(ConfigError, match="read by its join only"):
        asyncio.run(scenario())


def test_refunds_example_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """apps/refunds.py over the in-memory broker: pairs within the hour, flags full refunds."""
    import importlib

    monkeypatch.setenv("STREAMER_DEMO_PREFIX", "drv-refunds")
    refunds = importlib.reload(importlib.import_module("apps.refunds"))
    t0 = 1_700_000_000.0

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with TestDriver(refunds.app) as driver:
            for topic, key, value, ts in [
                ("drv-refunds-payments", "a1", {"id": "p1", "amount": 40}, t0),
                ("drv-refunds-payments", "a2", {"id": "p2", "amount": 10}, t0 + 5),
                ("drv-refunds-refunds", "a1", {"id": "r1", "amount": 40}, t0 + 600),
                ("drv-refunds-refunds", "a2", {"id": "r2", "amount": 5}, t0 + 60),
                ("drv-refunds-refunds", "a2", {"id": "r3", "amount": 10}, t0 + 7200),
            ]:
                await driver.send(topic, key=key, value=value, timestamp=ts)
            await driver.settle()
            return (
                driver.records("drv-refunds-paid-and-refunded"),
                driver.records("drv-refunds-refund-flags"),
            )

    paired, flagged = asyncio.run(scenario())
    assert sorted((v["payment"]["id"], v["refund"]["id"]) for _, v in paired) == [
        ("p1", "r1"),
        ("p2", "r2"),  # r3 is two hours later: outside the window
    ]
    assert flagged == [("a1", {"payment": "p1", "refund": "r1"})]


def test_table_table_join_maintains_rows_and_sends_changes() -> None:
    """A table of (user, profile) joined with (user, settings): rows and changes computed
    independently in plain Python from the same updates, deletes included."""
    import random

    app = App("drv-ttjoin", processing_guarantee="exactly_once")
    profiles = app.topic("drv-profiles", key_type=str, value_type=str, partitions=3)
    settings = app.topic("drv-settings", key_type=str, value_type=str, partitions=3)
    changes = app.topic("drv-user-changes", key_type=str, value_type=dict, partitions=3)
    users = app.table_join(profiles, settings, sink=changes,
                           joiner=lambda p, s: {"profile": p, "settings": s})  # fmt: skip
    rng = random.Random(11)
    updates = []
    for i in range(200):
        topic = rng.choice([profiles.name, settings.name])
        key = f"u{rng.randrange(10)}"
        value = None if rng.random() < 0.15 else f"{topic[4:7]}{i}"
        updates.append((topic, key, value))

    # Plain Python: each side a dict; a change per update when both present, or a tombstone
    # when a side goes away and a row existed.
    sides: dict[str, dict[str, str]] = {profiles.name: {}, settings.name: {}}
    rows: dict[str, dict[str, str]] = {}
    want_changes: dict[str, list[Any]] = {}
    for topic, key, value in updates:
        if value is None:
            sides[topic].pop(key, None)
        else:
            sides[topic][key] = value
        p, s = sides[profiles.name].get(key), sides[settings.name].get(key)
        if p is not None and s is not None:
            rows[key] = {"profile": p, "settings": s}
            want_changes.setdefault(key, []).append(rows[key])
        elif key in rows:
            del rows[key]
            want_changes.setdefault(key, []).append(None)

    async def scenario() -> tuple[list[Any], dict[Any, Any]]:
        async with TestDriver(app) as driver:
            # Each update stamped after the previous: the order the worker applies them in
            # across the two topics (lowest timestamp first), as Kafka Streams would.
            for i, (topic, key, value) in enumerate(updates):
                await driver.send(topic, key=key, value=value, timestamp=1_700_000_000.0 + i)
            await driver.settle()
            return driver.records(changes.name), users.as_dict()

    outputs, table = asyncio.run(scenario())
    got_changes: dict[str, list[Any]] = {}
    for key, value in outputs:
        got_changes.setdefault(key, []).append(value)
    assert got_changes == want_changes  # per key, in order
    assert table == rows


def test_users_example_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """apps/users.py over the in-memory broker: a row appears, changes, and goes away."""
    import importlib

    monkeypatch.setenv("STREAMER_DEMO_PREFIX", "drv-users")
    users = importlib.reload(importlib.import_module("apps.users"))
    t0 = 1_700_000_000.0

    async def scenario() -> tuple[list[Any], dict[Any, Any]]:
        async with TestDriver(users.app) as driver:
            for i, (topic, key, value) in enumerate([
                ("drv-users-profiles", "u1", {"name": "Ann"}),
                ("drv-users-settings", "u1", {"theme": "dark"}),
                ("drv-users-settings", "u1", {"theme": "light"}),
                ("drv-users-profiles", "u2", {"name": "Bob"}),
                ("drv-users-settings", "u2", {"theme": "dark"}),
                ("drv-users-profiles", "u2", None),
            ]):  # fmt: skip
                await driver.send(topic, key=key, value=value, timestamp=t0 + i)
            await driver.settle()
            return driver.records("drv-users-user-changes"), driver.table("drv-users-users")

    changes, table = asyncio.run(scenario())
    assert sorted(changes, key=lambda change: change[0]) == [  # each key's in order
        ("u1", {"name": "Ann", "theme": "dark"}),
        ("u1", {"name": "Ann", "theme": "light"}),
        ("u2", {"name": "Bob", "theme": "dark"}),
        ("u2", None),
    ]
    assert table == {"u1": {"name": "Ann", "theme": "light"}}


def test_a_global_table_that_cannot_be_restored_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restoring fails for good (not a transient Kafka error): the worker stops with one
    line naming the global tables, instead of waiting forever with its partitions gated."""
    import streamer.worker.global_tables as global_tables
    from streamer.errors import RestoreFailed

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(global_tables, "restore", broken)
    app = App("drv-global-broken")
    orders = app.topic("drv-gb-orders", key_type=str, value_type=str, partitions=2)
    app.global_table("drv-gb-customers", value_type=str)

    @app.agent(orders)
    async def use(stream: Stream) -> None:
        async for _ in stream:
            pass

    async def scenario() -> None:
        driver = TestDriver(app)
        driver.broker.create_topic("drv-gb-customers", 1)
        await driver.send("drv-gb-customers", key="c1", value="v")
        async with driver:
            await driver.send(orders.name, key="o1", value="x")
            await driver.settle()

    with pytest.raises(RestoreFailed, match=r"global tables: .*disk on fire"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
