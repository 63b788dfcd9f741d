"""Worker processes under kill -9, scaling and SIGTERM (at-least-once: nothing lost)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafkatools import (
    WorkerProcess,
    committed,
    distinct_outputs,
    end_offsets,
    group_settled,
    produce,
    read_all,
    wait_until,
)

PARTITIONS = 6


@pytest.fixture
def echo_env(kafka_bootstrap: str, create_topic, unique_name) -> dict[str, str]:
    return {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("echo"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_CONCURRENCY": "2",
    }


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


def _records(start: int, stop: int) -> Iterator[tuple[bytes, bytes]]:
    return ((f"k{i % 97}".encode(), str(i).encode()) for i in range(start, stop))


def _wait_for_outputs(bootstrap: str, topic: str, at_least: int, timeout: float = 60) -> None:
    wait_until(
        lambda: len(read_all(bootstrap, topic, expect=at_least, timeout=5, idle=1)) >= at_least,
        f"fewer than {at_least} outputs on {topic}",
        timeout=timeout,
    )


def test_kill_9_mid_stream_loses_nothing(
    kafka_bootstrap: str, echo_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    total = 20_000
    produce(kafka_bootstrap, echo_env["TEST_SRC"], _records(0, total))
    env = {**echo_env, "TEST_DELAY": "0.0005"}
    first = WorkerProcess("tests.apps.echo", env, tmp_path, "first")
    workers.append(first)
    _wait_for_outputs(kafka_bootstrap, echo_env["TEST_OUT"], 2_000)
    first.kill()  # mid-stream: thousands of records still unprocessed
    second = WorkerProcess("tests.apps.echo", echo_env, tmp_path, "second")
    workers.append(second)
    expected = {f"k{i % 97}:{i}" for i in range(total)}
    outputs = distinct_outputs(kafka_bootstrap, echo_env["TEST_OUT"], expected)
    assert expected <= outputs, f"{len(expected - outputs)} inputs never reached the sink"
    second.stop()


def test_workers_join_and_leave_without_losing_records(
    kafka_bootstrap: str, echo_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    src, out = echo_env["TEST_SRC"], echo_env["TEST_OUT"]
    env = {**echo_env, "TEST_DELAY": "0.0002"}
    workers.extend(WorkerProcess("tests.apps.echo", env, tmp_path, f"w{i}") for i in range(2))
    produce(kafka_bootstrap, src, _records(0, 5_000))
    _wait_for_outputs(kafka_bootstrap, out, 1_000)
    workers.append(WorkerProcess("tests.apps.echo", env, tmp_path, "w2"))  # a third joins
    produce(kafka_bootstrap, src, _records(5_000, 10_000))
    wait_until(group_settled(kafka_bootstrap, echo_env["TEST_APP_ID"], 3), "the third never joined",
               workers=workers)  # fmt: skip
    workers[0].stop()  # one leaves
    produce(kafka_bootstrap, src, _records(10_000, 15_000))
    expected = {f"k{i % 97}:{i}" for i in range(15_000)}
    outputs = distinct_outputs(kafka_bootstrap, out, expected)
    assert expected <= outputs, f"{len(expected - outputs)} inputs never reached the sink"
    # Every partition is served: the remaining workers commit up to the log end everywhere.
    app_id, ends = echo_env["TEST_APP_ID"], end_offsets(kafka_bootstrap, src, PARTITIONS)
    wait_until(
        lambda: committed(kafka_bootstrap, app_id, src, PARTITIONS) == ends,
        "some partition is not served after the rebalances",
        timeout=30,
        workers=workers[1:],
    )
    # Partitions really moved: the leaver gave some up, and the joiner received some.
    assert "revoked" in workers[0].log()
    assert "assigned" in workers[2].log()


def test_sigterm_exits_cleanly_with_everything_committed(
    kafka_bootstrap: str, echo_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    total = 3_000
    produce(kafka_bootstrap, echo_env["TEST_SRC"], _records(0, total))
    worker = WorkerProcess("tests.apps.echo", echo_env, tmp_path, "term")
    workers.append(worker)
    _wait_for_outputs(kafka_bootstrap, echo_env["TEST_OUT"], total)
    worker.stop()  # exit code 0
    src = echo_env["TEST_SRC"]
    assert committed(kafka_bootstrap, echo_env["TEST_APP_ID"], src, PARTITIONS) == end_offsets(
        kafka_bootstrap, src, PARTITIONS
    )
    log = worker.log()
    assert "worker started" in log and "worker stopped" in log
