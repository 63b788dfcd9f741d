"""`streamer offsets show|reset` on the real broker, run as the user runs it (a subprocess).

Each test gets its own source topic and group: partition 0 holds 100 records one second
apart (explicit timestamps), partition 1 holds 40; the group has committed 50 on partition 0
and nothing on partition 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.cimpl import NewTopic

from tests.kafkatools import ROOT, committed, retry_transient

APP = "tests.apps.offsets_app"
P0_RECORDS = 100
P1_RECORDS = 40
COMMITTED = 50


@dataclass
class Setup:
    bootstrap: str
    topic: str
    group: str
    base_ms: int  # timestamp of partition 0's offset 0; offset i is base_ms + i * 1000
    env: dict[str, str]

    def cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
            env={**os.environ, **self.env, **extra_env},
        )

    def reset(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.cli("offsets", "reset", APP, "--topic", self.topic, *args, **extra_env)

    def committed(self) -> dict[int, int]:
        return committed(self.bootstrap, self.group, self.topic, 2)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one `error:` line and no traceback; returns it."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def setup(kafka_bootstrap: str, create_topic: Any, unique_name: Any, tmp_path: Path) -> Setup:
    topic = create_topic("offsets-src", partitions=2)
    group = unique_name("offsets-app")
    base_ms = int(time.time() * 1000) - 3_600_000  # an hour ago: inside any retention
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(P0_RECORDS):
        producer.produce(topic, b"v", f"k{i}".encode(), partition=0, timestamp=base_ms + i * 1000)
    for i in range(P1_RECORDS):
        producer.produce(topic, b"v", f"k{i}".encode(), partition=1, timestamp=base_ms + i * 1000)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        retry_transient(  # a fresh broker may still be loading the group coordinator
            lambda: consumer.commit(
                offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False
            )
        )
    finally:
        consumer.close()
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "TEST_APP_ID": group,
        "TEST_SRC": topic,
        "TEST_PARTITIONS": "2",
    }
    return Setup(kafka_bootstrap, topic, group, base_ms, env)


def test_show_reports_committed_end_and_lag(setup: Setup) -> None:
    rows = json.loads(_ok(setup.cli("offsets", "show", APP, "--json")))
    by_partition = {row["partition"]: row for row in rows}
    assert by_partition[0] == {
        "group": setup.group,
        "topic": setup.topic,
        "partition": 0,
        "committed": COMMITTED,
        "start": 0,
        "end": P0_RECORDS,
        "lag": P0_RECORDS - COMMITTED,
    }
    assert by_partition[1]["committed"] is None and by_partition[1]["lag"] is None
    assert by_partition[1]["end"] == P1_RECORDS

    text = _ok(setup.cli("offsets", "show", APP))
    assert f"consumer group {setup.group!r}" in text
    assert text.splitlines()[1].split() == [
        "topic",
        "partition",
        "committed",
        "start",
        "end",
        "lag",
    ]
    assert f"total lag: {P0_RECORDS - COMMITTED}" in text


def test_dry_run_changes_nothing(setup: Setup) -> None:
    before = setup.committed()
    out = _ok(setup.reset("--to-offset", "10"))
    assert "dry run" in out
    assert [setup.topic, "0", "50", "→", "10", "-40"] in [line.split() for line in out.splitlines()]
    assert setup.committed() == before == {0: COMMITTED, 1: -1001}


def test_execute_moves_offsets(setup: Setup) -> None:
    _ok(setup.reset("--partition", "0", "--to-offset", "10", "--execute"))
    assert setup.committed() == {0: 10, 1: -1001}

    _ok(setup.reset("--partition", "0", "--shift-by", "-5", "--execute"))
    assert setup.committed()[0] == 5

    # Offset 30 has timestamp base + 30 s: a time just after it picks the next record.
    moment = datetime.fromtimestamp((setup.base_ms + 30_500) / 1000, UTC)
    _ok(setup.reset("--to-datetime", moment.isoformat().replace("+00:00", "Z"), "--execute"))
    assert setup.committed() == {0: 31, 1: 31}

    # The same instant written with another UTC offset, and as naive (= UTC), agree.
    exact = datetime.fromtimestamp((setup.base_ms + 20_000) / 1000, UTC)
    plus_two = exact.astimezone(timezone(timedelta(hours=2))).isoformat()
    _ok(setup.reset("--partition", "0", "--to-datetime", plus_two, "--execute"))
    assert setup.committed()[0] == 20
    naive = exact.replace(tzinfo=None).isoformat()
    _ok(setup.reset("--partition", "1", "--to-datetime", naive, "--execute"))
    assert setup.committed()[1] == 20

    _ok(setup.reset("--to-earliest", "--execute"))
    assert setup.committed() == {0: 0, 1: 0}
    _ok(setup.reset("--to-latest", "--execute"))
    assert setup.committed() == {0: P0_RECORDS, 1: P1_RECORDS}


def test_invalid_resets_change_nothing(setup: Setup) -> None:
    before = setup.committed()
    error = _one_error(setup.reset("--partition", "0", "--to-offset", "500", "--execute"))
    assert "500" in error and "outside the retained range 0..100" in error
    error = _one_error(setup.reset("--partition", "1", "--shift-by", "-5", "--execute"))
    assert "no committed offset" in error
    error = _one_error(setup.reset("--partition", "0", "--shift-by", "-60", "--execute"))
    assert "offset -10" in error
    error = _one_error(setup.reset("--partition", "7", "--to-earliest", "--execute"))
    assert "no partition 7" in error
    error = _one_error(setup.cli("offsets", "reset", APP, "--topic", "nope", "--to-earliest"))
    assert "does not read topic 'nope'" in error
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    error = _one_error(setup.reset("--to-datetime", future, "--execute"))
    assert "no record at or after" in error
    error = _one_error(setup.reset("--to-datetime", "last tuesday"))
    assert "not an ISO 8601 datetime" in error
    error = _one_error(setup.reset("--to-earliest", "--to-latest"))
    assert "exactly one of" in error
    assert setup.committed() == before


def test_reset_is_refused_while_the_group_is_active(setup: Setup) -> None:
    joined = threading.Event()
    stop = threading.Event()

    def member() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": setup.bootstrap,
                "group.id": setup.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([setup.topic], on_assign=lambda *_: joined.set())
        try:
            while not stop.is_set():
                consumer.poll(0.2)
        finally:
            consumer.close()

    thread = threading.Thread(target=member, daemon=True)
    thread.start()
    try:
        assert joined.wait(60), "the member never got an assignment"
        before = setup.committed()
        error = _one_error(setup.reset("--to-offset", "10", "--execute"))
        assert f"consumer group {setup.group!r} has 1 active member(s)" in error
        assert setup.committed() == before
        # A dry run still shows the plan, and says the execution would be refused.
        dry = setup.reset("--to-offset", "10")
        assert dry.returncode == 0 and "--execute is refused" in dry.stderr
    finally:
        stop.set()
        thread.join(30)
    # Once the member left, the same reset goes through.
    _ok(setup.reset("--to-offset", "10", "--execute"))
    assert setup.committed() == {0: 10, 1: 10}


def test_reset_state_deletes_changelogs_and_local_state(
    setup: Setup, kafka_admin: Any, tmp_path: Path
) -> None:
    changelog = f"{setup.group}-counts-changelog"
    kafka_admin.create_topics([NewTopic(changelog, 2)])[changelog].result(30)
    local = tmp_path / "state" / setup.group / "counts" / "0"
    local.mkdir(parents=True)
    (local / "CURRENT").write_text("x")

    # Without --reset-state: a warning that tables keep their values; nothing is deleted.
    kept = setup.reset("--to-earliest", "--execute", TEST_TABLE="1")
    assert kept.returncode == 0, kept.stderr
    assert "warning: tables counts keep their current values" in kept.stderr
    assert local.exists()

    # A dry run lists what it would delete, and deletes nothing.
    dry = _ok(setup.reset("--to-earliest", "--reset-state", TEST_TABLE="1"))
    assert f"would delete changelog topic {changelog}" in dry
    assert local.exists()

    # --reset-state resets whole tables, so it refuses a partial reset.
    error = _one_error(
        setup.reset("--to-earliest", "--partition", "0", "--reset-state", TEST_TABLE="1")
    )
    assert "--reset-state" in error

    out = _ok(setup.reset("--to-earliest", "--execute", "--reset-state", TEST_TABLE="1"))
    assert f"deleted changelog topic {changelog}" in out
    assert f"deleted local state {local.parent}" in out
    assert not local.parent.exists()
    assert changelog not in kafka_admin.list_topics(timeout=10).topics
    assert setup.committed() == {0: 0, 1: 0}
