"""A table partition moves between workers: the new owner restores it from the changelog and
continues; after a clean stop of one worker the counts are exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.kafkatools import (
    WorkerProcess,
    committed,
    group_settled,
    paced,
    produce,
    read_all,
    wait_committed,
    wait_until,
)

PARTITIONS = 4


def _latest_counts(bootstrap: str, changelog: str) -> dict[str, int]:
    return {m.key().decode(): int(m.value()) for m in read_all(bootstrap, changelog, idle=2)}


def test_clean_stop_moves_partitions_and_counts_stay_exact(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("events", partitions=PARTITIONS)
    app_id = unique_name("counter")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": app_id,
        "TEST_SRC": src,
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_DELAY": "0.0003",
    }
    workers = [
        WorkerProcess(
            "tests.apps.counter",
            {**env, "STREAMER_STATE_DIR": str(tmp_path / f"state-{i}")},
            tmp_path,
            f"w{i}",
        )
        for i in range(2)
    ]
    try:
        keys = [f"user-{i % 200}" for i in range(12_000)]
        # Both workers own partitions before any input arrives, so each counts some and
        # commits them: every partition has a committed offset. (Input produced before the
        # second worker joined could all be counted by the first, which then would have
        # nothing to restore when the partitions come back to it.)
        wait_until(group_settled(kafka_bootstrap, app_id, 2), "2 workers joined", workers=workers)
        produce(kafka_bootstrap, src, ((k.encode(), b"x") for k in keys[:6_000]))
        wait_until(
            paced(lambda: all(o > 0 for o in committed(
                kafka_bootstrap, app_id, src, PARTITIONS).values())),
            "some partition has nothing committed",
            workers=workers,
        )  # fmt: skip
        workers[0].stop()  # a clean stop: its partitions move
        produce(kafka_bootstrap, src, ((k.encode(), b"x") for k in keys[6_000:]))
        wait_committed(kafka_bootstrap, app_id, src, PARTITIONS, worker=workers[1], timeout=90)
        workers[1].stop()
        survivor_log = workers[1].log()
        assert "restoring" in survivor_log  # it rebuilt the moved partitions from the changelog
        counts = _latest_counts(kafka_bootstrap, f"{app_id}-counts-changelog")
        assert counts == Counter(keys)
    finally:
        for worker in workers:
            worker.close()
