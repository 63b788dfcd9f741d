"""Supervised restores on the real broker: a transient failure is retried and the outputs stay
exact; a persistent one stops the worker with one line and releases the store; five workers
starting at once on fresh topics all become ready (issue 14, items 7 and 8c)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamer import App, Stream
from streamer.errors import StreamerError
from streamer.kafka.backend import Backend, ConfluentBackend
from streamer.state.store import PartitionStore
from streamer.testing.faults import ConsumeFailure, FaultyBackend, WatermarkTimeout
from streamer.worker import Worker
from tests.kafkatools import (
    WorkerProcess,
    assert_counts_exact,
    produce,
    read_all,
    run_until,
    wait_committed,
    wait_until,
)

PARTITIONS = 3
KEYS = 20


def _app(
    bootstrap: str, app_id: str, src: str, out: str, state_dir: Path
) -> tuple[App, Counter[str]]:
    app = App(app_id, brokers=bootstrap, state_dir=state_dir, processing_guarantee="exactly_once")
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    sink = app.topic(out, key_type=str, value_type=int, partitions=PARTITIONS)
    counts = app.table("counts", default=int, value_type=int)
    seen: Counter[str] = Counter()

    @app.agent(source, sink=[sink])
    async def count(stream: Stream) -> AsyncIterator[tuple[str, int]]:
        async for event in stream:
            counts[event.key] += 1
            seen["events"] += 1
            yield event.key, counts[event.key]

    return app, seen


def _produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    produce(
        bootstrap, topic, ((f"k{i % KEYS}".encode(), b"x") for i in range(start, start + count))
    )


def _assert_exact(bootstrap: str, out: str, total: int) -> None:
    """Every key's counts 1..n, each exactly once (read_committed)."""
    assert_counts_exact(bootstrap, out, (f"k{i % KEYS}" for i in range(total)))


def _first_run(bootstrap: str, app_id: str, src: str, out: str, state_dir: Path) -> None:
    """Process 300 records so the changelog has something to restore."""
    _produce(bootstrap, src, 0, 300)
    app, seen = _app(bootstrap, app_id, src, out, state_dir)
    asyncio.run(run_until(app, lambda: seen["events"] >= 300))


def test_a_transient_restore_failure_is_retried_and_outputs_stay_exact(
    kafka_bootstrap: str,
    create_topic,
    unique_name,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, out = create_topic("rs-in", PARTITIONS), create_topic("rs-out", PARTITIONS)
    app_id = unique_name("restore-transient")
    _first_run(kafka_bootstrap, app_id, src, out, tmp_path / "first")
    _produce(kafka_bootstrap, src, 300, 300)
    read_error = ConsumeFailure("streamer-restore-", code=KafkaError._TRANSPORT, times=2)
    timeout = WatermarkTimeout("streamer-restore-")
    backend = FaultyBackend(ConfluentBackend(), read_error, timeout)
    # A fresh state directory: every table partition is restored from the changelog.
    app, seen = _app(kafka_bootstrap, app_id, src, out, tmp_path / "second")
    caplog.set_level(logging.WARNING, "streamer.tables")
    asyncio.run(run_until(app, lambda: seen["events"] >= 300, backend=backend))
    assert read_error.count == 2 and timeout.count == 1
    assert "retrying in" in caplog.text
    _assert_exact(kafka_bootstrap, out, 600)


async def _run_to_failure(app: App, backend: Backend, timeout: float = 90.0) -> Worker:
    worker = Worker(app, handle_signals=False, backend=backend)
    with pytest.raises(StreamerError) as info:
        await asyncio.wait_for(worker.run(), timeout)
    message = str(info.value)
    assert "\n" not in message
    assert "'counts'" in message and "partition" in message, message
    assert "TOPIC_AUTHORIZATION_FAILED" in message, message
    return worker


def test_a_persistent_restore_failure_stops_the_worker_and_releases_the_store(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src, out = create_topic("rs-in", PARTITIONS), create_topic("rs-out", PARTITIONS)
    app_id = unique_name("restore-fatal")
    _first_run(kafka_bootstrap, app_id, src, out, tmp_path / "first")
    fault = ConsumeFailure(
        "streamer-restore-", code=KafkaError.TOPIC_AUTHORIZATION_FAILED, times=None
    )
    state_dir = tmp_path / "second"
    app, _ = _app(kafka_bootstrap, app_id, src, out, state_dir)
    worker = asyncio.run(_run_to_failure(app, FaultyBackend(ConfluentBackend(), fault)))
    assert fault.fired.is_set()
    assert worker._tables._open == {}
    # RocksDB refuses a second handle in one process: opening succeeds only if it was closed.
    stores = list((state_dir / app_id / "counts").iterdir())
    assert stores
    for path in stores:
        PartitionStore.open_or_rebuild(path).close()
    # And a new worker on the same state directory carries on, exactly.
    _produce(kafka_bootstrap, src, 300, 300)
    app, seen = _app(kafka_bootstrap, app_id, src, out, state_dir)
    asyncio.run(run_until(app, lambda: seen["events"] >= 300))
    _assert_exact(kafka_bootstrap, out, 600)


def _env(bootstrap: str, unique_name: Any, tmp_path: Path, partitions: int) -> dict[str, str]:
    return {
        "STREAMER_BROKERS": bootstrap,
        "TEST_APP_ID": unique_name("regroup"),
        "TEST_SRC": unique_name("regroup-in"),
        "TEST_OUT": unique_name("regroup-out"),
        "TEST_PARTITIONS": str(partitions),
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
    }


def test_worker_process_exits_non_zero_naming_the_table_and_partition(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    env = _env(kafka_bootstrap, unique_name, tmp_path, 1)
    first = WorkerProcess("tests.apps.regroup", env, tmp_path, "first")
    try:
        _wait_topic(kafka_bootstrap, env["TEST_SRC"])
        _produce_users(kafka_bootstrap, env["TEST_SRC"], 0, 100)
        # Counted (the changelog has data to restore) once every count is out.
        assert len(read_all(kafka_bootstrap, env["TEST_OUT"], expect=100)) == 100
        first.terminate()
    finally:
        first.close()
    env = {**env, "TEST_FAULT": "restore-fatal", "STREAMER_STATE_DIR": str(tmp_path / "fresh")}
    failing = WorkerProcess("tests.apps.regroup", env, tmp_path, "failing")
    try:
        code = failing.proc.wait(120)
    finally:
        failing.close()
    log = failing.log()
    assert code != 0, log[-3000:]
    (line,) = [x for x in log.splitlines() if x.startswith("error: ")]
    assert "table 'counts' partition 0" in line and "TOPIC_AUTHORIZATION_FAILED" in line, line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def _wait_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_until(
        lambda: topic in admin.list_topics(timeout=10).topics,
        f"{topic} was never created",
        timeout=timeout,
    )


def _produce_users(bootstrap: str, topic: str, start: int, count: int) -> None:
    produce(
        bootstrap,
        topic,
        (
            (f"e{i}".encode(), json.dumps({"user": f"u{i % KEYS}"}).encode())
            for i in range(start, start + count)
        ),
    )


def test_five_workers_starting_at_once_on_fresh_topics_all_become_ready(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    partitions = 6
    env = _env(kafka_bootstrap, unique_name, tmp_path, partitions)
    ports = [_free_port() for _ in range(5)]
    workers = [
        WorkerProcess(
            "tests.apps.regroup",
            {**env, "STREAMER_WEB_PORT": str(port), "STREAMER_STATE_DIR": str(tmp_path / f"s{i}")},
            tmp_path,
            f"w{i}",
        )
        for i, port in enumerate(ports)
    ]
    try:
        wait_until(
            lambda: all(_ready(port)[0] == 200 for port in ports),
            "not every worker became ready",
            timeout=180,
            workers=workers,
        )
        total = 3_000
        _produce_users(kafka_bootstrap, env["TEST_SRC"], 0, total)
        wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], partitions)
        assert_counts_exact(
            kafka_bootstrap, env["TEST_OUT"], (f"u{i % KEYS}" for i in range(total))
        )
        for worker in workers:
            assert worker.alive(), worker.log()[-3000:]
            assert "Unknown partition" not in worker.log()
            assert "Task exception was never retrieved" not in worker.log()
    finally:
        for worker in workers:
            if worker.alive():
                worker.proc.terminate()
        deadline = time.monotonic() + 60
        for worker in workers:
            # close() kills one still running; the test's assertions said what went wrong.
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(max(deadline - time.monotonic(), 0.1))
            worker.close()
