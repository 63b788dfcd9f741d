"""Window callbacks that suspend (real I/O before their send) keep exactly-once across
stops: the close marker and the callback's output commit or abort together.

A worker counts keyed events in 2 s tumbling windows under exactly-once; its ``on_close``
sleeps before sending (as an HTTP call would), so stops land while callbacks are suspended.
The first worker is stopped with SIGTERM mid-stream, the second killed with SIGKILL
mid-stream, the third finishes the input and closes the last windows from its idle tick.
Read back read_committed, every (key, window) was sent exactly once with its count
(a plain-Python reference over the produced input), by ``on_close`` and by the table's
emit-final stream (``stream_to(topic, final=True)``) alike.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from tests.kafkatools import WorkerProcess, committed, end_offsets, read_all, wait_until

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(6)]
PER_PARTITION = 300
SIZE_MS = 2_000


def test_suspended_on_close_outputs_exist_exactly_once_across_stops(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("wincb")
    src, out = create_topic("src", partitions=PARTITIONS), create_topic("closed", partitions=1)
    finals = create_topic("finals", partitions=1)
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_COMMIT_INTERVAL": "0.2",
        "TEST_APP_ID": app_id,
        "TEST_SRC": src,
        "TEST_OUT": out,
        "TEST_FINALS": finals,
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_SIZE": str(SIZE_MS / 1000),
        "TEST_GRACE": "0",
        "TEST_RETENTION": "3600",
        "TEST_IDLE_CLOSE": "2",
        "TEST_SUSPEND": "0.4",
        "TEST_DELAY": "0.01",
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
    }
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = [
        (KEYS[(i * PARTITIONS + p) % len(KEYS)], p, base + i * 50)
        for i in range(PER_PARTITION)
        for p in range(PARTITIONS)
    ]
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for key, partition, ts in events:
        producer.produce(src, b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0
    # The reference: every (key, window start) with its count.
    expected = Counter((key, ts - ts % SIZE_MS) for key, _, ts in events)

    def progress() -> int:
        try:
            offsets = committed(kafka_bootstrap, app_id, src, PARTITIONS)
        except KafkaException:  # the group coordinator is still being elected
            return 0
        return sum(max(o, 0) for o in offsets.values())

    def start(name: str) -> WorkerProcess:
        return WorkerProcess("tests.apps.windows_app", env, tmp_path, name, instance="w")

    def closes(expect: int | None = None) -> Counter[tuple[str, int, int]]:
        messages = read_all(kafka_bootstrap, out, expect=expect, idle=1.5, timeout=30)
        values = [(m.key().decode(), json.loads(m.value())) for m in messages]
        return Counter((key, round(v["start"] * 1000), v["value"]) for key, v in values)

    workers: list[WorkerProcess] = []
    try:
        for name, stop_at, how in (("first", 1 / 3, "term"), ("second", 2 / 3, "kill")):
            worker = start(name)
            workers.append(worker)
            goal = len(events) * stop_at
            wait_until(
                lambda goal=goal: progress() >= goal,
                f"{goal:.0f} records committed",
                workers=[worker],
            )
            if how == "term":
                worker.terminate()
            else:
                worker.kill()
            assert progress() < len(events), "stopped too late to test anything"
        assert "suspends" in workers[0].log()
        workers.append(start("third"))
        ends = end_offsets(kafka_bootstrap, src, PARTITIONS)
        wait_until(
            lambda: progress() >= sum(ends.values()),
            "the input committed to its end",
            workers=workers[-1:],
        )
        got = closes(expect=len(expected))
        assert {(k, s) for k, s, _ in got} == set(expected), workers[-1].log()[-3000:]
        workers[-1].stop()
    finally:
        for worker in workers:
            worker.close()
    got = closes(expect=len(expected))
    assert got == Counter((key, start, count) for (key, start), count in expected.items())
    # The emit-final stream of the same table: each window once, committed with its close.
    records = read_all(kafka_bootstrap, finals, expect=len(expected), idle=1.5, timeout=30)
    final_values = Counter(
        (m.key().decode(), round(json.loads(m.value())["start"] * 1000),
         json.loads(m.value())["value"])
        for m in records
    )  # fmt: skip
    assert final_values == got
