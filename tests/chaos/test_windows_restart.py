"""Windowed tables survive kill -9 under exactly-once: windows opened before a crash still
close, each exactly once, and expire.

A worker (tests/apps/windows_app.py) counts keyed events in 5 s tumbling windows and sends
every close to an output topic. It is killed with SIGKILL while processing; a second worker
with a fresh state directory restores the windows (values, close markers, stream time) from
the changelog, finishes the input and is killed too, right after its last commit, while the
last windows are still open; a third, on the second's state directory, closes those from its
idle tick, with no further event, and expires every window. read_committed, the output
holds every (key, window) exactly once with its count, and the table holds nothing but its
metadata.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from streamer.state.store import PartitionStore
from streamer.state.window_store import META_KEY
from tests.kafkatools import WorkerProcess, committed, end_offsets, read_all, wait_until

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(8)]
PER_PARTITION = 400
SIZE_MS = 5_000


def _events(base: int) -> list[tuple[str, int, int]]:
    """(key, partition, timestamp ms): 30 s of event time per partition, in order."""
    events = []
    for i in range(PER_PARTITION):
        for partition in range(PARTITIONS):
            key = KEYS[(i * PARTITIONS + partition) % len(KEYS)]  # keys of one partition
            events.append((key, partition, base + i * 75))
    return events


def _closes(bootstrap: str, topic: str, expect: int | None = None) -> Counter[tuple[str, int, int]]:
    messages = read_all(bootstrap, topic, expect=expect, idle=1.5, timeout=20)
    values = [(m.key().decode(), json.loads(m.value())) for m in messages]
    return Counter((key, round(v["start"] * 1000), v["value"]) for key, v in values)


def test_windows_close_exactly_once_and_expire_across_kill_9(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("windows")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": app_id,
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("closed", partitions=1),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_SIZE": str(SIZE_MS / 1000),
        "TEST_GRACE": "1",
        "TEST_RETENTION": "3",
        "TEST_IDLE_CLOSE": "4",
    }
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = _events(base)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for key, partition, ts in events:
        producer.produce(env["TEST_SRC"], b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0
    expected = Counter((key, ts - ts % SIZE_MS) for key, _, ts in events)
    last_start = max(start for _, start in expected)
    src, out = env["TEST_SRC"], env["TEST_OUT"]

    def start(name: str, state: str, delay: str) -> WorkerProcess:
        worker_env = {**env, "STREAMER_STATE_DIR": str(tmp_path / state), "TEST_DELAY": delay}
        return WorkerProcess("tests.apps.windows_app", worker_env, tmp_path, name, instance="w")

    def progress() -> int:
        return sum(max(o, 0) for o in committed(kafka_bootstrap, app_id, src, PARTITIONS).values())

    ends = end_offsets(kafka_bootstrap, src, PARTITIONS)
    workers = [start("first", "state-a", "0.01")]
    try:
        # 1. Killed mid-stream: some windows closed (inside events), others open.
        wait_until(
            lambda: progress() >= len(events) // 3,
            "a third of the input committed",
            timeout=60,
            workers=workers[:1],
        )
        workers[0].kill()
        assert progress() < len(events)

        # 2. A fresh state directory: windows come back from the changelog. Killed as soon
        # as the input is committed, before the idle close of the last windows (4 s).
        workers.append(start("second", "state-b", "0"))
        wait_until(
            lambda: committed(kafka_bootstrap, app_id, src, PARTITIONS) == ends,
            "the input committed to its end",
            timeout=120,
            workers=workers[1:],
        )
        workers[1].kill()
        before = _closes(kafka_bootstrap, out)
        assert before and not any(start == last_start for _, start, _ in before)
        assert "restoring" in workers[1].log()

        # 3. Same state directory, no more events: the idle tick closes the last windows and
        # every window expires.
        workers.append(start("third", "state-b", "0"))
        closes = _closes(kafka_bootstrap, out, expect=len(expected))
        assert {(k, s) for k, s, _ in closes} == set(expected), workers[2].log()[-3000:]
        changelog = f"{app_id}-counts-changelog"

        def expired() -> bool:
            latest = {(m.partition(), m.key()): m.value() for m in read_all(
                kafka_bootstrap, changelog, idle=1)}  # fmt: skip
            return all(v is None for (_, k), v in latest.items() if k != META_KEY)

        wait_until(
            expired, "windows expired (changelog: tombstones only)", timeout=40, log_of=workers[2]
        )
        workers[2].stop()
    finally:
        for worker in workers:
            worker.close()

    # Exactly once, with the right counts, read_committed (read_all's default).
    closes = _closes(kafka_bootstrap, out, expect=len(expected))
    assert closes == Counter((key, start, count) for (key, start), count in expected.items())
    # The local state of the last worker holds only the metadata of each partition.
    for partition in range(PARTITIONS):
        store = PartitionStore(tmp_path / "state-b" / app_id / "counts" / str(partition))
        try:
            assert [key for key, _ in store.items()] == [META_KEY]
        finally:
            store.close()
