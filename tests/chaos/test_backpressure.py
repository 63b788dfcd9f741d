"""A slow agent over a backlog of 1,000,000 records: the worker's memory stays bounded,
because full lanes pause their partitions instead of buffering (DESIGN §2 rule 8)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from tests.kafkatools import WorkerProcess, committed, produce

BACKLOG = 1_000_000
RSS_BOUND_MB = 300  # a worker holding the whole backlog would need well over this
GROWTH_BOUND_MB = 80  # 2 partitions x 16 MB queued, plus fetches in flight


def test_memory_stays_flat_under_a_large_backlog(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("backlog", partitions=2)
    out = create_topic("backlog-out", partitions=2)
    payload = b"x" * 100  # ~120 MB of backlog in all
    produce(kafka_bootstrap, src, ((str(i % 1000).encode(), payload) for i in range(BACKLOG)))
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("slow"),
        "TEST_SRC": src,
        "TEST_OUT": out,
        "TEST_PARTITIONS": "2",
        "TEST_DELAY": "0.001",  # a slow agent: ~1,000 events/s per lane
    }
    worker = WorkerProcess("tests.apps.echo", env, tmp_path, "slow")
    try:
        process = psutil.Process(worker.proc.pid)
        samples: list[float] = []
        for _ in range(35):
            time.sleep(1)  # pacing: one RSS sample a second over the run, not a wait
            assert worker.alive(), worker.log()
            samples.append(process.memory_info().rss / 2**20)
        assert max(samples) < RSS_BOUND_MB, f"RSS samples (MB): {samples}"
        # And no trend from the first to the last steady seconds beyond what librdkafka's
        # fetch buffers hold (queued.max.messages.kbytes, 16 MB per partition, and a fetch
        # in flight): quiet CI runs saw RSS swing by up to 42 MB as they fill and drain.
        steady = samples[5:]
        start, end = sum(steady[:5]) / 5, sum(steady[-5:]) / 5
        assert end - start < GROWTH_BOUND_MB, f"RSS grew: {samples}"
        worker.stop()
        # It was really working through the backlog, and committed what it processed.
        done = sum(committed(kafka_bootstrap, env["TEST_APP_ID"], src, 2).values())
        assert 5_000 < done < BACKLOG
    finally:
        worker.close()
