"""Stream-table joins and co-partitioned assignment on the real broker.

Orders are enriched with the customer version in effect at each order's timestamp; the
customers topic is updated mid-stream (in event time). The expected output is computed
independently below in plain Python; outputs are read back read_committed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streamer import App, Stream
from streamer.worker import Worker
from tests.kafkatools import (
    all_committed,
    committed,
    create_app_topics,
    end_offsets,
    paced,
    read_all,
    run_cli,
    run_worker_until,
)

PARTITIONS = 4
CUSTOMERS = 40
ROUNDS = 5
# Recent timestamps: records stamped older than the topic's retention (7 days) are deleted
# by the broker's retention check, whatever their offsets.
BASE_MS = (int(time.time()) - 3600) * 1000


def written_committed(bootstrap: str, group: str, topic: str) -> Callable[[], bool]:
    """A paced check: ``group`` committed ``topic`` to its current end on every partition
    that holds records (an empty partition has nothing to commit)."""
    ends = {p: e for p, e in end_offsets(bootstrap, topic, PARTITIONS).items() if e}
    return paced(lambda: all(committed(bootstrap, group, topic, PARTITIONS)[p] == e
                             for p, e in ends.items()))  # fmt: skip


def produce_timed(bootstrap: str, topic: str, records: list[tuple[str, str | None, int]]) -> None:
    """Produce (key, value, timestamp ms) records, murmur2-partitioned like streamer."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"}
    )
    for key, value, ts in records:
        producer.produce(topic, None if value is None else value.encode(), key.encode(),
                         timestamp=ts)  # fmt: skip
    assert producer.flush(60) == 0


def scenario(
    rounds: int = ROUNDS,
) -> tuple[list[tuple[str, str | None, int]], list[tuple[str, str, int]]]:
    """Customer versions and orders interleaved in event time: each round updates every
    customer (some are deleted in round 2), and orders fall between the updates."""
    rng = random.Random(16)
    customers: list[tuple[str, str | None, int]] = []
    orders: list[tuple[str, str, int]] = []
    ts = BASE_MS
    for round_ in range(rounds):
        for c in range(CUSTOMERS):
            ts += 10
            name = f"c{c}"
            deleted = round_ == 2 and c % 7 == 0
            customers.append((name, None if deleted else f"{name}-v{round_}", ts))
        for _ in range(CUSTOMERS * 3):
            ts += 1
            name = f"c{rng.randrange(CUSTOMERS)}"
            orders.append((name, f"o{len(orders)}", ts))
    return customers, orders


def expected(
    customers: list[tuple[str, str | None, int]], orders: list[tuple[str, str, int]]
) -> dict[str, str | None]:
    """Order id -> the newest customer value stamped at or before the order (plain Python)."""
    out: dict[str, str | None] = {}
    for name, order_id, ts in orders:
        versions = [(t, v) for k, v, t in customers if k == name and t <= ts]
        out[order_id] = max(versions)[1] if versions else None
    return out


def join_app(bootstrap: str, app_id: str, names: dict[str, str], state_dir: Path) -> App:
    app = App(app_id, brokers=bootstrap, state_dir=state_dir, commit_interval=0.5,
              processing_guarantee="exactly_once")  # fmt: skip
    customers_t = app.topic(names["customers"], key_type=str, value_type=str,
                            partitions=PARTITIONS)  # fmt: skip
    orders_t = app.topic(names["orders"], key_type=str, value_type=str, partitions=PARTITIONS)
    out = app.topic(names["out"], key_type=str, value_type=dict, partitions=PARTITIONS)
    customers = app.table_from(customers_t)

    @app.agent(orders_t, sink=[out], concurrency=2)
    async def enrich(stream: Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for event in stream:
            yield event.key, {"order": event.value, "customer": customers.get(event.key)}

    return app


def test_enrichment_sees_the_version_in_effect_at_each_order(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    names = {
        "customers": create_topic("customers", partitions=PARTITIONS),
        "orders": create_topic("orders", partitions=PARTITIONS),
        "out": create_topic("enriched", partitions=PARTITIONS),
    }
    customers, orders = scenario()
    # The table's topic is written after the orders: the worker orders them by time.
    produce_timed(kafka_bootstrap, names["orders"], orders)
    produce_timed(kafka_bootstrap, names["customers"], customers)
    app_id = unique_name("enrich")
    app = join_app(kafka_bootstrap, app_id, names, tmp_path)
    orders_done = all_committed(kafka_bootstrap, app_id, names["orders"], PARTITIONS)
    customers_done = all_committed(kafka_bootstrap, app_id, names["customers"], PARTITIONS)
    table = app.tables[f"{names['customers']}-table"]
    snapshot: dict[str, str] = {}

    def done() -> bool:
        if not (orders_done() and customers_done()):
            return False
        snapshot.update(table.as_dict())  # read while the worker still owns the partitions
        return True

    asyncio.run(run_worker_until(Worker(app, handle_signals=False), done))

    records = read_all(kafka_bootstrap, names["out"], expect=len(orders))
    got = [json.loads(m.value()) for m in records]
    assert len(got) == len(orders)  # each order once (read_committed)
    assert {g["order"]: g["customer"] for g in got} == expected(customers, orders)
    # The table holds every customer's newest version.
    assert snapshot == {f"c{c}": f"c{c}-v{ROUNDS - 1}" for c in range(CUSTOMERS)}


def test_two_workers_own_partition_p_of_both_topics(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """Co-partitioned assignment: with two workers in the group, each owns the same
    partition numbers of the orders and the customers topic; together they enrich every
    order exactly once with the right version."""
    names = {
        "customers": create_topic("customers", partitions=PARTITIONS),
        "orders": create_topic("orders", partitions=PARTITIONS),
        "out": create_topic("enriched", partitions=PARTITIONS),
    }
    customers, orders = scenario()
    produce_timed(kafka_bootstrap, names["customers"], customers)
    produce_timed(kafka_bootstrap, names["orders"], orders)
    app_id = unique_name("enrich2")
    apps = [join_app(kafka_bootstrap, app_id, names, tmp_path / f"w{i}") for i in range(2)]
    workers = [Worker(app, handle_signals=False) for app in apps]
    orders_done = all_committed(kafka_bootstrap, app_id, names["orders"], PARTITIONS)
    customers_done = all_committed(kafka_bootstrap, app_id, names["customers"], PARTITIONS)
    owned: list[dict[str, set[int]]] = []

    def split_and_done() -> bool:
        mine = [
            {t: {p for (topic, p) in w._states if topic == t} for t in names.values()}
            for w in workers
        ]
        # Both workers hold partitions (the group spread them) and all input is committed.
        if not all(m[names["orders"]] for m in mine) or not (orders_done() and customers_done()):
            return False
        owned.extend(mine)
        return True

    async def both() -> None:
        second = asyncio.create_task(run_worker_until(workers[1], lambda: bool(owned)))
        await run_worker_until(workers[0], split_and_done, timeout=180)
        await second

    asyncio.run(both())
    for mine in owned:
        assert mine[names["orders"]] == mine[names["customers"]]
    assert owned[0][names["orders"]].isdisjoint(owned[1][names["orders"]])
    records = read_all(kafka_bootstrap, names["out"], expect=len(orders))
    got = [json.loads(m.value()) for m in records]
    assert len(got) == len(orders)
    assert {g["order"]: g["customer"] for g in got} == expected(customers, orders)


def test_global_table_restored_at_start_then_followed(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """Orders look their customer up by a foreign key in a global table: every worker holds
    the whole table, restored before the first order is processed, then kept up to date."""
    customers_topic = create_topic("g-customers", partitions=3)
    orders_topic = create_topic("g-orders", partitions=PARTITIONS)
    out_topic = create_topic("g-enriched", partitions=PARTITIONS)
    rng = random.Random(2)
    names = [f"c{c}" for c in range(CUSTOMERS)]
    produce_timed(kafka_bootstrap, customers_topic, [(n, f"{n}-v0", BASE_MS) for n in names])
    first = [(f"a{i}", rng.choice(names), BASE_MS) for i in range(200)]
    second = [(f"b{i}", rng.choice(names), BASE_MS) for i in range(200)]
    produce_timed(kafka_bootstrap, orders_topic, [(o, c, ts) for o, c, ts in first])

    app_id = unique_name("global")
    app = App(app_id, brokers=kafka_bootstrap, state_dir=tmp_path, commit_interval=0.5,
              processing_guarantee="exactly_once")  # fmt: skip
    orders_t = app.topic(orders_topic, key_type=str, value_type=str)
    out = app.topic(out_topic, key_type=str, value_type=dict)
    customers = app.global_table(customers_topic, value_type=str)
    at_first_event: list[int] = []

    @app.agent(orders_t, sink=[out], concurrency=2)
    async def enrich(stream: Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for event in stream:
            if not at_first_event:
                at_first_event.append(len(customers.as_dict()))
            yield event.key, {"customer": customers.get(event.value)}

    phase = {"n": 1}
    committed = [all_committed(kafka_bootstrap, app_id, orders_topic, PARTITIONS)]

    def progress() -> bool:
        if phase["n"] == 1 and committed[0]():
            # Update every customer while the worker runs, wait until the worker's table
            # applied the updates, then send the second orders.
            produce_timed(
                kafka_bootstrap, customers_topic, [(n, f"{n}-v1", BASE_MS) for n in names]
            )
            phase["n"] = 2
        elif phase["n"] == 2 and customers.applied >= CUSTOMERS:
            produce_timed(kafka_bootstrap, orders_topic, [(o, c, ts) for o, c, ts in second])
            committed[0] = all_committed(kafka_bootstrap, app_id, orders_topic, PARTITIONS)
            phase["n"] = 3
        return phase["n"] == 3 and committed[0]()

    asyncio.run(run_worker_until(Worker(app, handle_signals=False), progress))
    assert at_first_event == [CUSTOMERS]  # restored before the first order
    records = read_all(kafka_bootstrap, out_topic, expect=len(first) + len(second))
    got = {m.key().decode(): json.loads(m.value())["customer"] for m in records}
    assert len(records) == len(first) + len(second)
    want = {o: f"{c}-v0" for o, c, _ in first} | {o: f"{c}-v1" for o, c, _ in second}
    assert got == want


def test_enrich_app_tables_cli_and_replay(
    kafka_bootstrap: str, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apps/enrich.py on the real broker, then `streamer tables` (the co-partitioned table and
    the global one) and `streamer replay` of the orders topic (a multi-topic app)."""
    prefix = unique_name("enr")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_DEMO_PREFIX": prefix,
        "STREAMER_STATE_DIR": str(tmp_path),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    enrich = importlib.reload(importlib.import_module("apps.enrich"))
    create_app_topics(enrich.app)
    products_topic = f"{prefix}-products"
    produce_timed(
        kafka_bootstrap, products_topic, [("p1", '{"title": "Mug", "price": 9.5}', BASE_MS)]
    )
    produce_timed(
        kafka_bootstrap,
        f"{prefix}-customers",
        [("ann", '{"tier": "silver"}', BASE_MS), ("ann", '{"tier": "gold"}', BASE_MS + 20)],
    )
    produce_timed(
        kafka_bootstrap,
        f"{prefix}-shop-orders",
        [
            ("ann", '{"id": "o1", "product": "p1", "qty": 2}', BASE_MS + 10),
            ("ann", '{"id": "o2", "product": "p1"}', BASE_MS + 30),
        ],
    )
    orders_topic = f"{prefix}-shop-orders"
    done = written_committed(kafka_bootstrap, enrich.app.group_id, orders_topic)
    asyncio.run(run_worker_until(Worker(enrich.app, handle_signals=False), done))
    records = read_all(kafka_bootstrap, f"{prefix}-enriched-orders", expect=2)
    by_id = {v["id"]: v for v in (json.loads(m.value()) for m in records)}
    assert by_id["o1"]["customer"] == {"tier": "silver"} and by_id["o1"]["total"] == 19.0
    assert by_id["o2"]["customer"] == {"tier": "gold"}

    listing = run_cli("tables", "apps.enrich", env=env)
    assert listing.returncode == 0, listing.stderr
    assert f"{prefix}-customers-table" in listing.stdout and products_topic in listing.stdout
    got = run_cli("tables", "apps.enrich", "get", products_topic, "p1", env=env)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"title": "Mug", "price": 9.5}
    got = run_cli("tables", "apps.enrich", "get", f"{prefix}-customers-table", "ann", env=env)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"tier": "gold"}  # the newest version

    replay = run_cli("replay", "apps.enrich", "--topic", orders_topic,
                     "--from-offset", "0", "--dry-run", env=env)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert '"silver"' in replay.stdout and '"gold"' in replay.stdout


def payments_and_refunds(
    count: int, seed: int = 5
) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Payments every 10 s over 8 keys; most have a refund stamped up to 90 s before or
    after (inside or outside a 60 s window); each topic's records out of order by up to 20 s."""
    rng = random.Random(seed)
    payments: list[tuple[str, str, int]] = []
    refunds: list[tuple[str, str, int]] = []
    for i in range(count):
        key = f"acct{rng.randrange(8)}"
        ts = BASE_MS + i * 10_000
        payments.append((key, f"p{i}", ts))
        if rng.random() < 0.7:
            refunds.append((key, f"r{i}", ts + rng.randrange(-90_000, 90_000)))
    for side in (payments, refunds):
        side.sort(key=lambda r: r[2] + rng.randrange(20_000))
    return payments, refunds


def expected_pairs(
    payments: list[tuple[str, str, int]], refunds: list[tuple[str, str, int]], within_ms: int
) -> list[tuple[str, str]]:
    """Plain Python: every (payment, refund) of one key stamped at most ``within_ms`` apart."""
    return sorted(
        (p, r)
        for pk, p, pt in payments
        for rk, r, rt in refunds
        if pk == rk and abs(pt - rt) <= within_ms
    )


def test_windowed_join_pairs_each_match_once(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    left = create_topic("payments", partitions=PARTITIONS)
    right = create_topic("refunds", partitions=PARTITIONS)
    out_topic = create_topic("matched", partitions=PARTITIONS)
    payments, refunds = payments_and_refunds(300)
    produce_timed(kafka_bootstrap, left, payments)
    produce_timed(kafka_bootstrap, right, refunds)
    app_id = unique_name("ssjoin")
    app = App(app_id, brokers=kafka_bootstrap, state_dir=tmp_path, commit_interval=0.5,
              processing_guarantee="exactly_once")  # fmt: skip
    payments_t = app.topic(left, key_type=str, value_type=str, partitions=PARTITIONS)
    refunds_t = app.topic(right, key_type=str, value_type=str, partitions=PARTITIONS)
    out = app.topic(out_topic, key_type=str, value_type=dict, partitions=PARTITIONS)
    join = app.join(payments_t, refunds_t, within=60, grace=120, sink=out,
                    joiner=lambda p, r: {"payment": p, "refund": r})  # fmt: skip
    want = expected_pairs(payments, refunds, 60_000)
    left_done = written_committed(kafka_bootstrap, app_id, left)
    right_done = written_committed(kafka_bootstrap, app_id, right)
    phase = {"late_sent": False}

    def progress() -> bool:
        nonlocal right_done
        if not phase["late_sent"]:
            if not (left_done() and right_done()):
                return False
            # Far behind every partition's stream time: dropped, never paired.
            produce_timed(kafka_bootstrap, right, [(f"acct{k}", "late", BASE_MS) for k in range(8)])
            right_done = written_committed(kafka_bootstrap, app_id, right)
            phase["late_sent"] = True
        return right_done()

    asyncio.run(run_worker_until(Worker(app, handle_signals=False), progress))
    records = read_all(kafka_bootstrap, out_topic, expect=len(want))
    got = sorted((v["payment"], v["refund"]) for v in (json.loads(m.value()) for m in records))
    assert got == want  # each pair once, none missing, none extra (read_committed)
    assert join.late == 8


def test_table_table_join_rows_and_changes(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """Profiles joined with settings (both read as tables, deletes included): the changes
    sent and the joined rows match what plain Python computes from the same updates."""
    left = create_topic("profiles", partitions=PARTITIONS)
    right = create_topic("settings", partitions=PARTITIONS)
    changes_topic = create_topic("user-changes", partitions=PARTITIONS)
    rng = random.Random(21)
    updates: list[tuple[str, str, str | None, int]] = []
    for i in range(400):
        topic = rng.choice([left, right])
        value = None if rng.random() < 0.15 else f"{topic[:3]}{i}"
        updates.append((topic, f"u{rng.randrange(20)}", value, BASE_MS + i))
    for topic in (left, right):
        produce_timed(kafka_bootstrap, topic, [(k, v, ts) for t, k, v, ts in updates if t == topic])
    sides: dict[str, dict[str, str]] = {left: {}, right: {}}
    rows: dict[str, dict[str, str]] = {}
    want: dict[str, list[Any]] = {}
    for topic, key, value, _ in updates:
        if value is None:
            sides[topic].pop(key, None)
        else:
            sides[topic][key] = value
        p, s = sides[left].get(key), sides[right].get(key)
        if p is not None and s is not None:
            rows[key] = {"profile": p, "settings": s}
            want.setdefault(key, []).append(rows[key])
        elif key in rows:
            del rows[key]
            want.setdefault(key, []).append(None)

    app_id = unique_name("ttjoin")
    app = App(app_id, brokers=kafka_bootstrap, state_dir=tmp_path, commit_interval=0.5,
              processing_guarantee="exactly_once")  # fmt: skip
    profiles = app.topic(left, key_type=str, value_type=str, partitions=PARTITIONS)
    settings = app.topic(right, key_type=str, value_type=str, partitions=PARTITIONS)
    changes = app.topic(changes_topic, key_type=str, value_type=dict, partitions=PARTITIONS)
    users = app.table_join(profiles, settings, sink=changes,
                           joiner=lambda p, s: {"profile": p, "settings": s})  # fmt: skip
    left_done = written_committed(kafka_bootstrap, app_id, left)
    right_done = written_committed(kafka_bootstrap, app_id, right)
    snapshot: dict[str, Any] = {}

    def done() -> bool:
        if not (left_done() and right_done()):
            return False
        snapshot.update(users.as_dict())
        return True

    asyncio.run(run_worker_until(Worker(app, handle_signals=False), done))
    records = read_all(kafka_bootstrap, changes_topic, expect=sum(map(len, want.values())))
    got: dict[str, list[Any]] = {}
    for m in records:
        got.setdefault(m.key().decode(), []).append(
            None if m.value() is None else json.loads(m.value())
        )
    assert got == want
    assert snapshot == rows
