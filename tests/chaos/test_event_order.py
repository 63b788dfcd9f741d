"""Ordered consumption across partitions: a catch-up after a restart creates no lateness
that the live run did not have.

Four producers (one per source partition) write payments live, stamped with the time of
writing. The app (tests/apps/payments_app.py) re-keys them by merchant through a
repartition topic and counts them in 2 s tumbling windows of event time with 1 s grace.
It is stopped for 5 s (longer than the grace) while the producers go on, and restarted:
it catches up on a backlog of several seconds per partition. Without ordering, the
re-keying agent forwards each partition's backlog at its own pace and the repartition
topic's stream time runs seconds ahead of events still in flight, which are dropped as
late. Checked: every window's count (read_committed) equals the count a plain-Python
reference computes from what the producers wrote, and no event was late.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from tests.kafkatools import WorkerProcess, read_all, wait_committed, wait_until

PARTITIONS = 4
MERCHANTS = [f"m-{i:02d}" for i in range(12)]
SIZE_MS, GRACE_MS = 2_000, 1_000


class LiveProducer(threading.Thread):
    """Writes ~100 payments a second to one partition, each stamped with the wall clock,
    until stopped; remembers (merchant, ts ms) of every payment it wrote."""

    def __init__(self, bootstrap: str, topic: str, partition: int) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )
        self.topic, self.partition = topic, partition
        self.written: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.rng = random.Random(partition)

    def send(self, merchant: str, ts: int) -> None:
        value = json.dumps({"m": merchant, "ts": ts / 1000}).encode()
        self.producer.produce(self.topic, value, merchant.encode(), partition=self.partition,
                              timestamp=ts)  # fmt: skip
        self.written.append((merchant, ts))

    def run(self) -> None:
        while not self.stop.is_set():
            self.send(self.rng.choice(MERCHANTS), int(time.time() * 1000))
            self.producer.poll(0)
            self.stop.wait(0.01)  # paces the live input; returns at once on stop
        assert self.producer.flush(30) == 0


def test_catch_up_after_a_stop_longer_than_grace_keeps_every_window_exact(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("pay")
    src, out = create_topic("payments", partitions=PARTITIONS), create_topic("closed")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "TEST_APP_ID": app_id,
        "TEST_SRC": src,
        "TEST_OUT": out,
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_SIZE": str(SIZE_MS / 1000),
        "TEST_GRACE": str(GRACE_MS / 1000),
        "STREAMER_EVENT_ORDER": os.environ.get("TEST_EVENT_ORDER", "true"),
    }
    producers = [LiveProducer(kafka_bootstrap, src, p) for p in range(PARTITIONS)]
    workers = []
    try:
        first = WorkerProcess("tests.apps.payments_app", env, tmp_path, "first", instance="w")
        workers.append(first)
        for producer in producers:
            producer.start()
        wait_until(
            lambda: "assigned" in first.log() and sum(len(p.written) for p in producers) >= 2000,
            "first worker not running with input",
            timeout=60,
            log_of=first,
        )
        first.stop()
        # Stopped for longer than grace in event time: the backlog spans several windows.
        stopped_ms = int(time.time() * 1000)
        wait_until(
            lambda: max(ts for p in producers for _, ts in p.written) >= stopped_ms + 5000,
            "producers did not write past the stop",
            timeout=60,
        )
        second = WorkerProcess("tests.apps.payments_app", env, tmp_path, "second", instance="w")
        workers.append(second)
        wait_until(
            lambda: sum(len(p.written) for p in producers) >= 6000,
            "not enough input after the restart",
            timeout=120,
            log_of=second,
        )
        for producer in producers:
            producer.stop.set()
        for producer in producers:
            producer.join(30)
        # Close every window: one payment per merchant far past the last (each merchant's
        # repartition partition sees its stream time pass every window written).
        last = max(ts for p in producers for _, ts in p.written)
        closer = producers[0]
        for merchant in MERCHANTS:
            closer.send(merchant, last + 10 * SIZE_MS)
        assert closer.producer.flush(30) == 0
        final = {(m, ts - ts % SIZE_MS) for m, ts in closer.written[-len(MERCHANTS) :]}
        written = [entry for p in producers for entry in p.written]
        expected = Counter((m, ts - ts % SIZE_MS) for m, ts in written)
        for window in final:
            del expected[window]
        wait_committed(kafka_bootstrap, app_id, src, PARTITIONS, worker=second)
        messages = read_all(kafka_bootstrap, out, expect=len(expected), idle=3, timeout=60)
        log = second.log()
        second.stop()
    finally:
        for producer in producers:
            producer.stop.set()
        for worker in workers:
            worker.close()
    got = Counter()
    for message in messages:
        value = json.loads(message.value())
        got[message.key().decode(), round(value["start"] * 1000)] += value["count"]
    assert "late event" not in log, [line for line in log.splitlines() if "late" in line]
    missing = {w: (n, got.get(w, 0)) for w, n in expected.items() if got.get(w, 0) != n}
    assert not missing, (
        f"{len(missing)} windows differ (expected, got): {sorted(missing.items())[:10]}"
    )
    assert got == expected
