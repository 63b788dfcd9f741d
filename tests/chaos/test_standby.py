"""Standby replicas: a hand-over to a worker that kept a warm copy restores only the tail of
the changelog; a cold start restores all of it (the test measures both)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.kafkatools import (
    WorkerProcess,
    group_settled,
    produce,
    read_all,
    wait_committed,
    wait_until,
)

PARTITIONS = 4


def _restored(log: str) -> int:
    return sum(int(n) for n in re.findall(r"restored (\d+) records in", log))


def test_standby_hand_over_restores_less_than_a_cold_start(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("standby"),
        "TEST_SRC": create_topic("events", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "STREAMER_STANDBY_REPLICAS": "1",
    }

    def start(name: str, **extra: str) -> WorkerProcess:
        state = {"STREAMER_STATE_DIR": str(tmp_path / f"state-{name}")}
        return WorkerProcess("tests.apps.counter", {**env, **state, **extra}, tmp_path, name)

    def settled(worker: WorkerProcess) -> None:
        wait_committed(
            kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=worker
        )

    keys = [f"user-{i % 5_000}" for i in range(40_000)]
    first, second = start("first"), start("second")
    try:
        # Both joined: each owns two partitions and follows the other two.
        wait_until(group_settled(kafka_bootstrap, env["TEST_APP_ID"], 2), "2 workers joined",
                   workers=[first, second])  # fmt: skip
        wait_until(
            lambda: all("standby: following" in w.log() for w in (first, second)),
            "standby replicas not following",
            workers=[first, second],
        )
        produce(kafka_bootstrap, env["TEST_SRC"], ((k.encode(), b"x") for k in keys))
        wait_committed(
            kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=second
        )
        # The standby may still be a few records behind the last checkpoint: the hand-over
        # then restores those too, which the bound below allows for.
        first.stop()  # a clean stop: its partitions move to the standby
        wait_committed(
            kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=second
        )
        # One more event per key: the survivor counts on from the values its standby copies
        # hold, so any key its warm copy got wrong shows up in the final counts.
        produce(
            kafka_bootstrap, env["TEST_SRC"], ((f"user-{i}".encode(), b"x") for i in range(5_000))
        )
        wait_committed(
            kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=second
        )
        second.stop()
    finally:
        first.close()
        second.close()
    handover = _restored(second.log())

    cold = start("cold", STREAMER_STANDBY_REPLICAS="0")
    try:
        wait_until(
            lambda: cold.log().count("restored") >= PARTITIONS,
            f"{PARTITIONS} partitions restored (log lines)",
            timeout=60,
            workers=[cold],
        )
        cold.stop()
    finally:
        cold.close()
    cold_start = _restored(cold.log())
    changelog = read_all(kafka_bootstrap, f"{env['TEST_APP_ID']}-counts-changelog", idle=2)
    expected = Counter(keys) + Counter(f"user-{i}" for i in range(5_000))
    assert {m.key().decode(): int(m.value()) for m in changelog} == expected
    print(f"restored on hand-over: {handover}, on a cold start: {cold_start}")
    assert cold_start >= len(expected)  # every key at least once
    assert handover < cold_start / 4
