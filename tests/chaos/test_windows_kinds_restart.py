"""Sliding windows and sessions across a hand-over, kill -9 and a restart, under exactly-once:
every final window is sent by ``on_close`` exactly once, with the count a plain-Python
reference computes from the produced input (tests/windows_reference.py).

A worker (tests/apps/windows_app.py, TEST_KIND sliding or session) counts keyed events with
out-of-order times (some beyond grace: late, some bridging two sessions). A second worker
joins mid-stream (partitions move to it, restored from the changelog), the first stops
(SIGTERM: the rest moves), the second is killed with SIGKILL mid-stream, and a third, on the
second's state directory, finishes the input and closes the last windows from its idle tick
and expires them all. Read back read_committed, the output holds each final window once, and
the changelog ends with every window deleted (merged-away sessions included).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from streamer.state.window_store import META_KEY
from tests import windows_reference as reference
from tests.kafkatools import WorkerProcess, committed, end_offsets, read_all, wait_until

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(8)]
PER_PARTITION = 500
SIZE_MS, GRACE_MS = 1_000, 2_000


def _events(base: int) -> list[reference.Timed]:
    """Per partition: times rising by 0-300 ms, each up to 2.5 s behind (mostly within
    grace), one in 60 far behind (late)."""
    rng = random.Random(21)
    events = []
    for i in range(PER_PARTITION):
        for partition in range(PARTITIONS):
            key = rng.choice(KEYS[partition::PARTITIONS])  # keys of one partition
            behind = 30_000 if i % 60 == 30 else rng.randrange(0, 2_500)
            events.append((key, partition, base + i * 150 + rng.randrange(0, 300) - behind))
    return events


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_each_final_window_exactly_once_across_hand_over_kill_and_restart(
    kind: str, kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name(f"win-{kind}")
    src, out = create_topic("src", partitions=PARTITIONS), create_topic("closed", partitions=1)
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_COMMIT_INTERVAL": "0.2",
        "TEST_APP_ID": app_id,
        "TEST_SRC": src,
        "TEST_OUT": out,
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_KIND": kind,
        "TEST_SIZE": str(SIZE_MS / 1000),
        "TEST_GRACE": str(GRACE_MS / 1000),
        "TEST_RETENTION": "4",
        "TEST_IDLE_CLOSE": "6",
        "TEST_DELAY": "0.02",  # slow enough that the stops land mid-stream
    }
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = _events(base)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for key, partition, ts in events:
        producer.produce(src, b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0
    ref = reference.sliding if kind == "sliding" else reference.sessions
    expected, late = ref(events, SIZE_MS, GRACE_MS)
    assert late >= 10 and len(expected) > 100
    ends = end_offsets(kafka_bootstrap, src, PARTITIONS)

    def start(name: str, state: str, instance: str) -> WorkerProcess:
        worker_env = {**env, "STREAMER_STATE_DIR": str(tmp_path / state)}
        return WorkerProcess("tests.apps.windows_app", worker_env, tmp_path, name,
                             instance=instance)  # fmt: skip

    def progress() -> int:
        try:
            offsets = committed(kafka_bootstrap, app_id, src, PARTITIONS)
        except KafkaException:  # the group coordinator is still being elected
            return 0
        return sum(max(o, 0) for o in offsets.values())

    def closes(expect: int | None = None) -> Counter[reference.Window]:
        messages = read_all(kafka_bootstrap, out, expect=expect, idle=1.5, timeout=30)
        values = [(m.key().decode(), json.loads(m.value())) for m in messages]
        return Counter(
            (key, round(v["start"] * 1000), round(v["end"] * 1000), v["value"]) for key, v in values
        )

    def wait(
        condition: str, check: Callable[[], object], worker: WorkerProcess, limit: float
    ) -> None:
        wait_until(check, condition, timeout=limit, log_of=worker)

    total = len(events)
    workers = [start("first", "state-a", "a")]
    try:
        wait("first quarter", lambda: progress() >= total // 4, workers[0], 60)
        workers.append(start("second", "state-b", "b"))  # joins: partitions move to it
        wait("hand-over", lambda: "restor" in workers[1].log(), workers[1], 60)
        workers[0].stop()  # the rest moves to the second worker
        wait("three quarters", lambda: progress() >= total * 3 // 4, workers[1], 90)
        workers[1].kill()
        assert progress() < total, "killed too late to test anything"
        workers.append(start("third", "state-b", "b"))
        wait("input committed", lambda: committed(
            kafka_bootstrap, app_id, src, PARTITIONS) == ends, workers[2], 90)  # fmt: skip
        got = closes(expect=sum(expected.values()))
        assert set(got) == set(expected), workers[2].log()[-3000:]
        # Every window expires: the changelog ends with tombstones only (and the metadata).
        changelog = f"{app_id}-counts-changelog"

        def expired() -> bool:
            latest = {(m.partition(), m.key()): m.value() for m in read_all(
                kafka_bootstrap, changelog, idle=1)}  # fmt: skip
            return all(v is None for (_, k), v in latest.items() if k != META_KEY)

        wait("windows expired (changelog: tombstones only)", expired, workers[2], 40)
        workers[2].stop()
    finally:
        for worker in workers:
            worker.close()
    # Exactly once, each with its count, read_committed (read_all's default).
    assert closes(expect=sum(expected.values())) == expected
