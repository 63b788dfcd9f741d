"""Lateness is visible, and windowed tables are readable from the CLI, on the real broker.

A worker (tests/apps/windows_app.py, 5 s tumbling windows, 1 s grace, no idle close) reads
out-of-order input with late events on two partitions. A plain-Python reference over the
same input says which events are late and what every window holds. Checked: the
``streamer_late_events_total{table,partition}`` counter on /metrics, the rate-limited
warning in the worker's log, the late count per partition in ``streamer tables APP``, and
``streamer tables APP get counts KEY`` listing the key's windows (value, open/closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from streamer import App, Event, Stream
from streamer.kafka.backend import ConfluentBackend
from streamer.state.store import PartitionStore, partition_path
from streamer.state.window_store import META_KEY
from streamer.testing.faults import FaultyBackend, TransactionFailure
from streamer.worker import Worker
from tests.integration.test_metrics import free_port, scrape
from tests.kafkatools import (
    ROOT,
    WorkerProcess,
    all_committed,
    run_worker_until,
    wait_committed,
    wait_until,
)

PARTITIONS = 2
KEYS = [f"p{p}-k{k}" for p in range(PARTITIONS) for k in range(3)]  # each in one partition
SIZE, GRACE = 5_000, 1_000


def _input(base: int) -> list[tuple[str, int, int]]:
    """(key, partition, ts ms) in produce order: mostly in time order, some events up to
    0.8 s out of order (kept: inside grace) and some 3-9 s behind (late)."""
    rng = random.Random(5)
    events = []
    for partition in range(PARTITIONS):
        for i in range(300):
            ts = base + i * 100
            roll = rng.random()
            if roll < 0.1:
                ts -= rng.randrange(1, 800)
            elif roll < 0.15:
                ts -= rng.randrange(3_000, 9_000)
            events.append((f"p{partition}-k{i % 3}", partition, ts))
    return events


def _reference(
    events: list[tuple[str, int, int]],
) -> tuple[dict[int, int], dict[tuple[str, int], int], dict[int, int]]:
    """Late events per partition, the count of every (key, window start), and each
    partition's final stream time: the windowing rules applied by hand."""
    late: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)
    counts: Counter[tuple[str, int]] = Counter()
    stream: dict[int, int] = dict.fromkeys(range(PARTITIONS), -1)
    for key, partition, ts in events:
        stream[partition] = max(stream[partition], ts)
        start = ts - ts % SIZE
        if start + SIZE + GRACE <= stream[partition]:
            late[partition] += 1
        else:
            counts[key, start] += 1
    return late, dict(counts), stream


def test_late_events_are_counted_logged_exported_and_windows_listed(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("late")
    src = create_topic("src", partitions=PARTITIONS)
    port = free_port()
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "STREAMER_WEB_PORT": str(port),
        "TEST_APP_ID": app_id,
        "TEST_SRC": src,
        "TEST_OUT": create_topic("closed"),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_SIZE": str(SIZE / 1000),
        "TEST_GRACE": str(GRACE / 1000),
        "TEST_RETENTION": "86400",
        "TEST_IDLE_CLOSE": "none",
    }
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = _input(base)
    late, counts, stream = _reference(events)
    assert all(late.values()), "the input must have late events on every partition"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for key, partition, ts in events:
        producer.produce(src, b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0

    worker = WorkerProcess("tests.apps.windows_app", env, tmp_path, "late", instance="w")
    try:
        wait_committed(kafka_bootstrap, app_id, src, PARTITIONS, worker=worker)
        exported: dict[tuple[tuple[str, str], ...], float] = {}
        got: dict[int, int] = {}

        def counted() -> bool:
            exported.clear()
            exported.update(
                scrape(f"http://127.0.0.1:{port}").get("streamer_late_events_total", {})
            )
            got.clear()
            got.update({int(dict(labels)["partition"]): int(v) for labels, v in exported.items()})
            return got == late

        wait_until(
            counted,
            lambda: f"late events exported {got}, expected {late}",
            timeout=30,
            workers=[worker],
        )
        assert all(dict(labels)["table"] == "counts" for labels in exported)
        worker.stop()
        log = worker.log()
    finally:
        worker.close()
    warnings = [line for line in log.splitlines() if "late event(s)" in line]
    assert warnings and "WARNING" in warnings[0] and "grace of" in warnings[0], log[-3000:]
    # Rate-limited: one line per 10 s per table, however many late events.
    assert len(warnings) <= 2, warnings

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer", "tables", "tests.apps.windows_app", *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
            env={**os.environ, **env},
        )  # fmt: skip

    listing = cli("--json")
    assert listing.returncode == 0, listing.stderr
    (table,) = json.loads(listing.stdout)
    assert {p["partition"]: p["late_events"] for p in table["partitions"]} == late
    assert {p["partition"]: p["stream_time"] for p in table["partitions"]} == {
        p: t / 1000 for p, t in stream.items()
    }
    text = cli()
    assert text.returncode == 0 and "late events" in text.stdout, text.stderr

    for key in KEYS:
        got = json.loads(cli("get", "counts", key, "--json").stdout)
        windows = {round(w["start"] * 1000): (w["value"], w["closed"]) for w in got["windows"]}
        partition = got["windows"][0]["partition"]
        expected = {
            start: (n, start + SIZE + GRACE <= stream[partition])
            for (k, start), n in counts.items()
            if k == key
        }
        assert windows == expected, key
        assert all(w["end"] - w["start"] == SIZE / 1000 for w in got["windows"])
    shown = cli("get", "counts", "p0-k0")
    assert shown.returncode == 0 and "closed" in shown.stdout and "open" in shown.stdout
    missing = cli("get", "counts", "nope")
    assert missing.returncode == 1 and "no stored window" in missing.stderr


def test_late_events_redone_after_a_rewind_are_counted_once(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """A checkpoint that fails rewinds the partitions and the late events since the last
    commit are processed again (``on_late`` sees them twice): the late-event counts, the
    process's and the stored ones, still say how many events were late, once each."""
    src = create_topic("src", partitions=PARTITIONS)
    base = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    events = _input(base)
    late, _counts, _stream = _reference(events)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for key, partition, ts in events:
        producer.produce(src, b"1", key.encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0

    app = App(unique_name("relate"), brokers=kafka_bootstrap, state_dir=tmp_path / "state",
              processing_guarantee="exactly_once", commit_interval=0.2,
              shutdown_timeout=5)  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    # The first checkpoint after the last late event was counted fails: that event, at
    # least, is processed again.
    fault = TransactionFailure("abortable", call="send_offsets", cue=threading.Event())
    seen_late: list[int] = []

    def on_late(event: Event) -> None:
        seen_late.append(event.partition)
        if len(seen_late) == sum(late.values()):
            fault.cue.set()

    counts = app.table("counts", default=int, value_type=int).tumbling(
        SIZE / 1000, grace=GRACE / 1000, retention=86400, idle_close=None, on_late=on_late
    )

    @app.agent(source)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    worker = Worker(app, handle_signals=False, backend=FaultyBackend(ConfluentBackend(), fault))
    done = all_committed(kafka_bootstrap, app.group_id, src, PARTITIONS)
    asyncio.run(run_worker_until(worker, lambda: fault.fired.is_set() and done()))
    assert fault.count == 1
    assert len(seen_late) > sum(late.values()), "no late event was processed again"
    assert counts.lateness.by_partition == late
    assert counts.late_events == sum(late.values())
    stored = {}
    for partition in range(PARTITIONS):
        path = partition_path(tmp_path / "state", app.id, "counts", partition)
        store = PartitionStore(path, read_only=True)
        try:
            stored[partition] = json.loads(store.get(META_KEY) or b"{}").get("late", 0)
        finally:
            store.close()
    assert stored == late
