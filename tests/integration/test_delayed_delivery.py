"""Delayed delivery on the real broker: records sent with ``delay=`` reach their
destination when due, never before, across a kill -9 of the worker; once each under
exactly-once (read_committed), at least once otherwise."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

import streamer
from streamer.delays import DELAY_PARTITIONS, delay_topic
from tests.kafkatools import (
    WorkerProcess,
    committed,
    end_offsets,
    read_all,
    wait_committed,
    wait_until,
    wait_until_async,
)

TOTAL = 300


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_delayed_records_are_released_when_due_across_kill_9(
    kafka_bootstrap: str, unique_name, tmp_path: Path, guarantee: str
) -> None:
    app_id = unique_name("delayed")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "STREAMER_COMMIT_INTERVAL": "0.3",
        "TEST_APP_ID": app_id,
        "TEST_DEST": unique_name("dest"),
        "TEST_GUARANTEE": guarantee,
    }
    sender = streamer.App(app_id, brokers=kafka_bootstrap, delayed_delivery=True)
    dest = sender.topic(env["TEST_DEST"], key_type=str, value_type=int, partitions=3)
    topic = delay_topic(app_id)
    worker = WorkerProcess("tests.apps.delayed", env, tmp_path, "w1", instance="one")
    try:
        # Due between 3 and 9 seconds from now, in no particular order per key.
        due: dict[int, float] = {}

        async def send_all() -> None:
            for i in range(TOTAL):
                seconds = 3 + (i * 7919 % 600) / 100
                due[i] = time.time() + seconds
                await dest.send(key=f"k{i % 17}", value=i, delay=timedelta(seconds=seconds))

        asyncio.run(send_all())
        ends = end_offsets(kafka_bootstrap, topic, DELAY_PARTITIONS)
        assert sum(ends.values()) == TOTAL
        # Kill -9 once some records were released and committed, others still held.
        done: dict[int, int] = {}

        def released() -> bool:
            done.update(committed(kafka_bootstrap, app_id, topic, DELAY_PARTITIONS))
            return sum(max(v, 0) for v in done.values()) >= 60

        wait_until(released, "60 delayed records released and committed", workers=[worker])
        assert done != ends, "the kill came too late to test anything"
        worker.kill()
        worker = WorkerProcess("tests.apps.delayed", env, tmp_path, "w2", instance="one")
        wait_committed(kafka_bootstrap, app_id, topic, DELAY_PARTITIONS, worker=worker)
        worker.stop()
    finally:
        worker.close()
    released = read_all(kafka_bootstrap, env["TEST_DEST"], expect=TOTAL)
    counts = Counter(int(m.value()) for m in released)
    assert set(counts) == set(range(TOTAL)), "a delayed record was lost"
    if guarantee == "exactly_once":
        assert set(counts.values()) == {1}, "a delayed record was released twice"
    for message in released:  # never before its time (record timestamps: produce time)
        assert message.timestamp()[1] >= int(due[int(message.value())] * 1000) - 5
        assert not any(name.startswith("streamer.deliver") for name, _ in message.headers() or [])


def test_a_worker_holding_a_record_for_an_hour_stops_at_once_and_cleanly(
    kafka_bootstrap: str, unique_name
) -> None:
    from streamer.worker import Worker

    app = streamer.App(unique_name("held"), brokers=kafka_bootstrap, delayed_delivery=True,
                       commit_interval=0.2, shutdown_timeout=60)  # fmt: skip
    dest = app.topic(unique_name("dest"), key_type=str, value_type=int, partitions=1)

    async def main() -> None:
        worker = Worker(app, handle_signals=False)
        task = asyncio.create_task(worker.run())
        try:
            # Send once the worker created its topics and owns their partitions.
            await wait_until_async(lambda: bool(worker._states), "the worker never started",
                                   timeout=120, task=task)  # fmt: skip
            await dest.send(key="a", value=1, delay=timedelta(hours=1))
            await wait_until_async(
                lambda: any(state.holding for state in worker._states.values()),
                "the worker never held the delayed record",
                timeout=60,
                task=task,
            )
            assert not worker._busy()  # held only: the pump blocks in poll(), no naps
        finally:
            worker.stop()
            # The hold is cut short: had the stop waited for it, run() would raise
            # ShutdownIncomplete once shutdown_timeout (60 s) passed.
            await asyncio.wait_for(task, 120)

    asyncio.run(main())
    held = committed(kafka_bootstrap, app.group_id, delay_topic(app.id), DELAY_PARTITIONS)
    assert all(offset <= 0 for offset in held.values())  # the held record stays uncommitted
    assert read_all(kafka_bootstrap, dest.name, idle=1) == []
