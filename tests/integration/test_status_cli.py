"""`streamer status` on the real broker, run as the user runs it (a subprocess).

Each test gets its own source topic and group (the app is tests/apps/status_app.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.kafkatools import ROOT, WorkerProcess, interruptible, wait_until

APP = "tests.apps.status_app"
RECORDS = {0: 30, 1: 20, 2: 10}  # per partition
COMMITTED = {0: 25, 1: 20}  # partition 2: never committed


def _env(bootstrap: str, topic: str, group: str, **extra: str) -> dict[str, str]:
    return {
        "STREAMER_BROKERS": bootstrap,
        "TEST_APP_ID": group,
        "TEST_SRC": topic,
        "TEST_PARTITIONS": str(len(RECORDS)),
        **extra,
    }


def _status(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "status", APP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _produce(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, count in RECORDS.items():
        for i in range(count):
            producer.produce(topic, b"v", f"k{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def _rows(text: str) -> dict[int, list[str]]:
    """The partition table of the text view, by partition: each row's cells."""
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["topic", "partition", "owner"]
    )
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("total lag:"):
            break
        cells = line.split()
        rows[int(cells[1])] = cells
    return rows


def test_once_and_json_show_partitions_and_lags(
    kafka_bootstrap: str, create_topic: Any, unique_name: Any
) -> None:
    topic = create_topic("status-src", partitions=len(RECORDS))
    group = unique_name("status-app")
    _produce(kafka_bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        offsets = [TopicPartition(topic, p, o) for p, o in COMMITTED.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()
    env = _env(kafka_bootstrap, topic, group)

    text = _status(env, "--once")
    assert f"group {group!r}" in text
    assert _rows(text) == {
        # topic, partition, owner, committed, end, lag, in/s, done/s, lag/s
        0: [topic, "0", "-", "25", "30", "5", "-", "-", "-"],
        1: [topic, "1", "-", "20", "20", "0", "-", "-", "-"],
        2: [topic, "2", "-", "-", "10", "-", "-", "-", "-"],
    }
    assert "total lag: 5 (1 partition(s) without a committed offset)" in text

    snapshot = json.loads(_status(env, "--json"))
    assert snapshot["group"] == group
    assert snapshot["members"] == []
    assert snapshot["total_lag"] == 5
    assert [
        (p["partition"], p["owner"], p["committed"], p["end"], p["lag"])
        for p in snapshot["partitions"]
    ] == [(0, None, 25, 30, 5), (1, None, 20, 20, 0), (2, None, None, 10, None)]
    assert {p["topic"] for p in snapshot["partitions"]} == {topic}


def test_owners_and_live_rates_with_a_running_worker(
    kafka_bootstrap: str, create_topic: Any, unique_name: Any, tmp_path: Path
) -> None:
    topic = create_topic("status-live", partitions=len(RECORDS))
    group = unique_name("status-live")
    _produce(kafka_bootstrap, topic)
    env = _env(kafka_bootstrap, topic, group, TEST_DELAY="0.05")  # ~1.5 s for partition 0
    worker = WorkerProcess(APP, env, tmp_path, "worker")
    try:
        snapshot: dict[str, Any] = {}

        def owning() -> bool:
            snapshot.update(json.loads(_status(env, "--json")))
            owners = {p["owner"] for p in snapshot["partitions"]}
            return len(snapshot["members"]) == 1 and None not in owners

        wait_until(
            owning,
            lambda: f"the worker never showed up as owner: {snapshot}",
            timeout=60,
            workers=[worker],
        )
        (member,) = snapshot["members"]
        assert sorted(member["partitions"]) == [f"{topic}[{p}]" for p in RECORDS]
        assert {p["owner"] for p in snapshot["partitions"]} == {member["label"]}

        # The live view: snapshots one after the other (not a terminal: no screen clearing),
        # with rates from the second one on; Ctrl-C ends it cleanly.
        screen = tmp_path / "live.out"
        with screen.open("w") as into:
            live = subprocess.Popen(
                [sys.executable, "-m", "streamer", "status", APP, "--interval", "0.5"],
                stdout=into,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env={**os.environ, **env},
                preexec_fn=interruptible,
            )
        # Three views printed, the last with rates (known from the second view on).
        wait_until(
            lambda: screen.read_text().count("refreshing every 0.5s") >= 4,
            "the live view printed fewer than 4 views",
            timeout=60,
        )
        live.send_signal(signal.SIGINT)
        _, err = live.communicate(timeout=30)
        out = screen.read_text()
        assert live.returncode == 0, out + err
        views = [
            part for part in out.split("refreshing every 0.5s; Ctrl-C to quit") if part.strip()
        ]
        assert len(views) >= 4, out
        # The last view may be cut by Ctrl-C; the one before it is whole.
        later = _rows(views[-2])
        assert set(later) == set(RECORDS)
        assert all(row[2] == member["label"] for row in later.values())
        assert all(row[6] != "-" for row in later.values()), views[-2]  # rates known

        def caught_up() -> bool:
            snapshot.update(json.loads(_status(env, "--json")))
            return snapshot["total_lag"] == 0 and all(p["lag"] == 0 for p in snapshot["partitions"])

        wait_until(
            caught_up, lambda: f"lag never reached 0: {snapshot}", timeout=60, workers=[worker]
        )
    finally:
        worker.terminate()
        worker.close()
