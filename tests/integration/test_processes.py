"""`streamer worker APP --processes 2` against the real broker: both children join the
group with their derived instance ids, a child killed with kill -9 is restarted (same
identity), SIGTERM to the supervisor stops them all cleanly, and every input has its
output (at-least-once: duplicates after the kill are allowed)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

from tests.kafkatools import (
    WorkerProcess,
    distinct_outputs,
    group_members,
    produce,
    wait_until,
)

PARTITIONS = 4


def _records(start: int, stop: int) -> Iterator[tuple[bytes, bytes]]:
    return ((f"k{i % 31}".encode(), str(i).encode()) for i in range(start, stop))


def _pids(log: str) -> dict[int, int]:
    """The latest pid of each child, from the supervisor's log lines."""
    found: dict[int, int] = {}
    for index, pid in re.findall(r"worker process (\d+) started \(pid (\d+)\)", log):
        found[int(index)] = int(pid)
    return found


def test_two_processes_share_the_group_survive_kill_9_and_stop_on_sigterm(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("procs")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "TEST_APP_ID": app_id,
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    supervisor = WorkerProcess(
        "tests.apps.echo", env, tmp_path, "supervisor", instance="w", args=("--processes", "2")
    )
    try:
        # Both children are members, with the instance ids derived from --instance.
        def joined() -> bool:
            members = group_members(kafka_bootstrap, app_id)
            return members is not None and set(members) == {"w-0", "w-1"} and all(members.values())

        wait_until(joined, "the two worker processes did not both join the group", timeout=90)
        # Each child names itself in its log lines (they share the supervisor's stderr).
        wait_until(
            lambda: all(f"[process-{i}] streamer." in supervisor.log() for i in (0, 1)),
            "the worker processes' log lines do not say which process wrote them",
            timeout=30,
        )
        produce(kafka_bootstrap, env["TEST_SRC"], _records(0, 2_000))

        # kill -9 one child: the supervisor starts it again, with the same identity.
        killed = _pids(supervisor.log())[1]
        os.kill(killed, signal.SIGKILL)
        wait_until(
            lambda: _pids(supervisor.log()).get(1, killed) != killed,
            "the killed worker process was not restarted",
            timeout=60,
        )
        assert "worker process 1" in supervisor.log() and "restarting it" in supervisor.log()
        wait_until(joined, "the restarted process did not rejoin as w-1", timeout=120)
        produce(kafka_bootstrap, env["TEST_SRC"], _records(2_000, 4_000))

        expected = {f"k{i % 31}:{i}" for i in range(4_000)}
        seen = distinct_outputs(kafka_bootstrap, env["TEST_OUT"], expected)
        assert expected <= seen, f"{len(expected - seen)} inputs without output"
        # SIGTERM to the supervisor stops every child cleanly: exit status 0 (the
        # supervisor's status is 0 only when every child's is).
        children = list(_pids(supervisor.log()).values())
        supervisor.stop()
        for pid in children:
            assert not _alive(pid), f"worker process {pid} still running after the stop"
    finally:
        supervisor.close()
        for pid in _pids(supervisor.log()).values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"
