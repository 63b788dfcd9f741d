"""Stream-table joins under exactly-once with workers joining, crashing and leaving.

Orders keyed by customer, enriched with the customer version in effect at each order's
timestamp (customers updated mid-stream in event time). Two workers start; a third joins
(scale-out); one is killed with SIGKILL; one stops cleanly (scale-in); the last finishes.
Afterwards, read_committed: every order enriched exactly once, with the version computed
independently in plain Python, and every owned partition number always the same across
the two topics (the group protocol keeps them together).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_joins import expected, produce_timed, scenario
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
