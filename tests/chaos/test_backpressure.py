"""A slow agent over a backlog of 1,000,000 records: the worker's memory stays bounded,
because full lanes pause their partitions instead of buffering (DESIGN §2 rule 8)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from tests.kafkatools import WorkerProcess, committed, produce

BACKLOG = 1_000_000
RSS_BOUND_MB = 300  # a worker holding the whole backlog would need well over this
GROWTH_BOUND_MB = 40


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
        # And it ends on a plateau, not a slope. librdkafka's fetch buffers fill in steps
        # (up to queued.max.messages.kbytes per partition and a fetch in flight: a quiet CI
        # run saw one step of 42 MB after 16 s, then nothing), so the check is that the last
        # seconds do not climb, not that the whole run stays within 40 MB of its start.
        last = samples[-8:]
        assert max(last) - min(last) < GROWTH_BOUND_MB, f"RSS still climbing: {samples}"
        worker.stop()
        # It was really working through the backlog, and committed what it processed.
        done = sum(committed(kafka_bootstrap, env["TEST_APP_ID"], src, 2).values())
        assert 5_000 < done < BACKLOG
    finally:
        worker.close()
