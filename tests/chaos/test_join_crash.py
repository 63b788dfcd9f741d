"""Joins under exactly-once with workers joining, crashing and leaving.

Orders keyed by customer, enriched with the customer version in effect at each order's
timestamp (customers updated mid-stream in event time). Two workers start; a third joins
(scale-out); one is killed with SIGKILL; one stops cleanly (scale-in); the last finishes.
Afterwards, read_committed: every order enriched exactly once, with the version computed
independently in plain Python, and every owned partition number always the same across
the two topics (the group protocol keeps them together).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

from tests.integration.test_joins import expected, expected_pairs, produce_timed, scenario
from tests.kafkatools import WorkerProcess, committed, end_offsets, read_all, wait_until

PARTITIONS = 4


def test_join_is_exactly_once_through_scale_out_kill_9_and_scale_in(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("join-crash"),
        "TEST_CUSTOMERS": create_topic("customers", partitions=PARTITIONS),
        "TEST_ORDERS": create_topic("orders", partitions=PARTITIONS),
        "TEST_OUT": create_topic("enriched", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_DELAY": "0.05",
    }
    customers, orders = scenario(rounds=20)
    produce_timed(kafka_bootstrap, env["TEST_CUSTOMERS"], customers)
    produce_timed(kafka_bootstrap, env["TEST_ORDERS"], orders)
    group, topic = env["TEST_APP_ID"], env["TEST_ORDERS"]
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    total = sum(ends.values())

    def done_orders() -> int:
        offsets = committed(kafka_bootstrap, group, topic, PARTITIONS)
        return sum(max(o, 0) for o in offsets.values())

    def start(name: str) -> WorkerProcess:
        worker_env = {**env, "STREAMER_STATE_DIR": str(tmp_path / f"state-{name}")}
        return WorkerProcess("tests.apps.join_app", worker_env, tmp_path, name)

    workers = {name: start(name) for name in ("w0", "w1")}
    try:
        wait_until(lambda: done_orders() >= total // 5, "no progress with two workers",
                   workers=workers.values())  # fmt: skip
        workers["w2"] = start("w2")  # scale out
        wait_until(lambda: "assigned" in workers["w2"].log(), "w2 never got partitions",
                   workers=workers.values())  # fmt: skip
        at_kill = done_orders()
        assert at_kill < total, "all processed before the crash: make TEST_DELAY larger"
        workers["w1"].kill()  # a crash: its transaction is aborted, its partitions move
        wait_until(lambda: done_orders() > at_kill, "no progress after kill -9",
                   workers=[workers["w0"], workers["w2"]])  # fmt: skip
        assert workers["w0"].terminate() < 30  # scale in, cleanly
        wait_until(lambda: done_orders() == total, "orders not all committed", timeout=180,
                   workers=[workers["w2"]])  # fmt: skip
    finally:
        for worker in workers.values():
            worker.close()
    records = read_all(kafka_bootstrap, env["TEST_OUT"], expect=len(orders))
    got = [json.loads(m.value()) for m in records]
    seen = [g["order"] for g in got]
    assert len(seen) == len(set(seen)) == len(orders), "an order missing or enriched twice"
    assert {g["order"]: g["customer"] for g in got} == expected(customers, orders)
    for worker in workers.values():  # co-partitioned assignments, in every worker's log
        for line in worker.log().splitlines():
            if " assigned " in line or " revoked " in line:
                assert "customers" in line and "orders" in line, line


class LiveJoinInput(threading.Thread):
    """Writes payments and refunds (keyed by account, stamped around now) until stopped,
    recording what was acknowledged."""

    def __init__(self, bootstrap: str, left: str, right: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"}
        )
        self.left, self.right = left, right
        self.payments: list[tuple[str, str, int]] = []
        self.refunds: list[tuple[str, str, int]] = []
        self.stop = threading.Event()
        self.rng = random.Random(48)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"acct{self.rng.randrange(16)}"
            ts = int(time.time() * 1000)
            self.producer.produce(self.left, f"p{i}".encode(), key.encode(), timestamp=ts)
            self.payments.append((key, f"p{i}", ts))
            if self.rng.random() < 0.7:  # inside or outside the window, before or after
                rts = ts + self.rng.randrange(-90_000, 90_000)
                self.producer.produce(self.right, f"r{i}".encode(), key.encode(), timestamp=rts)
                self.refunds.append((key, f"r{i}", rts))
            i += 1
            self.producer.poll(0)
            time.sleep(0.01)  # pacing: the input spreads over the whole scenario
        assert self.producer.flush(30) == 0


def test_windowed_join_is_exactly_once_through_scale_out_kill_9_and_scale_in(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("ssjoin-crash"),
        "TEST_LEFT": create_topic("payments", partitions=PARTITIONS),
        "TEST_RIGHT": create_topic("refunds", partitions=PARTITIONS),
        "TEST_OUT": create_topic("pairs", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_WITHIN": "60",
        "TEST_GRACE": "600",
    }
    group = env["TEST_APP_ID"]
    live = LiveJoinInput(kafka_bootstrap, env["TEST_LEFT"], env["TEST_RIGHT"])

    def done_payments() -> int:
        offsets = committed(kafka_bootstrap, group, env["TEST_LEFT"], PARTITIONS)
        return sum(max(o, 0) for o in offsets.values())

    def start(name: str) -> WorkerProcess:
        worker_env = {**env, "STREAMER_STATE_DIR": str(tmp_path / f"state-{name}")}
        return WorkerProcess("tests.apps.ssjoin_app", worker_env, tmp_path, name)

    workers = {name: start(name) for name in ("w0", "w1")}
    live.start()
    try:
        wait_until(lambda: done_payments() >= 200, "no progress with two workers",
                   workers=workers.values())  # fmt: skip
        workers["w2"] = start("w2")  # scale out
        wait_until(lambda: "assigned" in workers["w2"].log(), "w2 never got partitions",
                   workers=workers.values())  # fmt: skip
        at_kill = done_payments()
        workers["w1"].kill()  # a crash: its open transaction is aborted
        wait_until(lambda: done_payments() > at_kill + 200, "no progress after kill -9",
                   workers=[workers["w0"], workers["w2"]])  # fmt: skip
        assert workers["w0"].terminate() < 30  # scale in, cleanly
        wait_until(lambda: done_payments() > at_kill + 400, "no progress after scale-in",
                   workers=[workers["w2"]])  # fmt: skip
        live.stop.set()
        live.join(60)
        ends = {
            topic: end_offsets(kafka_bootstrap, topic, PARTITIONS)
            for topic in (env["TEST_LEFT"], env["TEST_RIGHT"])
        }

        def all_in() -> bool:
            return all(
                committed(kafka_bootstrap, group, topic, PARTITIONS)[p] == end
                for topic, by_partition in ends.items()
                for p, end in by_partition.items()
                if end
            )

        wait_until(all_in, "input not all committed", timeout=180, workers=[workers["w2"]])
    finally:
        live.stop.set()
        for worker in workers.values():
            worker.close()
    want = expected_pairs(live.payments, live.refunds, 60_000)
    records = read_all(kafka_bootstrap, env["TEST_OUT"], expect=len(want))
    got = sorted((v["payment"], v["refund"]) for v in (json.loads(m.value()) for m in records))
    assert len(got) == len(set(got)), "a pair emitted twice"
    assert got == want, f"{len(got)} pairs, {len(want)} expected"


def test_a_killed_worker_restarted_under_its_instance_id_finishes_the_join(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """`streamer worker --instance w0`, killed with SIGKILL and started again at once under
    the same instance id: it joins the group (the KIP-848 protocol without static
    membership; a static member would be refused until the broker's session timeout) and
    finishes the enrichment exactly once."""
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("join-restart"),
        "TEST_CUSTOMERS": create_topic("customers", partitions=PARTITIONS),
        "TEST_ORDERS": create_topic("orders", partitions=PARTITIONS),
        "TEST_OUT": create_topic("enriched", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_DELAY": "0.05",
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
    }
    customers, orders = scenario(rounds=6)
    produce_timed(kafka_bootstrap, env["TEST_CUSTOMERS"], customers)
    produce_timed(kafka_bootstrap, env["TEST_ORDERS"], orders)
    group, topic = env["TEST_APP_ID"], env["TEST_ORDERS"]
    total = sum(end_offsets(kafka_bootstrap, topic, PARTITIONS).values())

    def done_orders() -> int:
        return sum(max(o, 0) for o in committed(kafka_bootstrap, group, topic, PARTITIONS).values())

    first = WorkerProcess("tests.apps.join_app", env, tmp_path, "first", instance="w0")
    second = None
    try:
        wait_until(lambda: done_orders() > 0, "no progress", workers=[first])
        first.kill()
        assert done_orders() < total, "all processed before the crash: make TEST_DELAY larger"
        second = WorkerProcess("tests.apps.join_app", env, tmp_path, "second", instance="w0")
        wait_until(lambda: done_orders() == total, "orders not all committed after the restart",
                   timeout=120, workers=[second])  # fmt: skip
    finally:
        first.close()
        if second is not None:
            second.close()
    records = read_all(kafka_bootstrap, env["TEST_OUT"], expect=len(orders))
    got = [json.loads(m.value()) for m in records]
    assert len(got) == len({g["order"] for g in got}) == len(orders)
    assert {g["order"]: g["customer"] for g in got} == expected(customers, orders)
