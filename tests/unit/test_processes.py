"""`streamer worker --processes N`: the children's identities and command lines, and the
supervisor's contract (restart a dead child, fan SIGTERM out, exit status), with stand-in
children (small Python processes) instead of workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.ops import processes
from streamer.ops.processes import Supervisor, child_argv, child_settings, parse_processes
from streamer.settings import Settings


def test_processes_parses_numbers_and_auto() -> None:
    assert parse_processes("3") == 3
    assert parse_processes("auto") == (os.cpu_count() or 1)
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ConfigError, match="--processes"):
            parse_processes(bad)


def test_each_child_has_its_own_identity() -> None:
    base = Settings(instance_id="shop", state_dir=Path("/var/state"), web_port=9000)
    child = child_settings(base, 2)
    assert child.instance_id == "shop-2"
    assert child.state_dir == Path("/var/state/process-2")
    assert child.web_port == 9002
    plain = child_settings(Settings(), 1)
    assert plain.instance_id is None  # no static membership asked for: none invented
    assert plain.web_port is None
    assert plain.state_dir == Path("state/process-1")


def test_child_command_drops_processes_and_adds_its_index() -> None:
    argv = ["worker", "apps.shop", "--processes", "2", "--instance", "a", "--processes=3"]
    assert child_argv(argv, 1) == [
        sys.executable, "-m", "streamer", "worker", "apps.shop", "--instance", "a",
        "--process-index", "1",
    ]  # fmt: skip


# A stand-in child: exits 0 on SIGTERM, writes its pid to a file named by its index.
CHILD = """
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(sys.argv[2])))
Path(sys.argv[1]).write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def _supervise(
    tmp_path: Path, count: int, status_on_term: int = 0
) -> tuple[Supervisor, threading.Thread, list[int]]:
    def command(index: int) -> list[str]:
        return [sys.executable, "-c", CHILD, str(tmp_path / f"pid-{index}"), str(status_on_term)]

    supervisor = Supervisor(
        count,
        command,
        stop_timeout=5.0,
        launch=lambda argv: subprocess.Popen(argv),
        handle_signals=False,  # off the main thread: the test signals it directly
    )
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(supervisor.run()))
    thread.start()
    _wait(lambda: len(supervisor.children) == count)
    for index in range(count):
        _wait(lambda i=index: (tmp_path / f"pid-{i}").exists())  # its handler is installed
    return supervisor, thread, outcome


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_dead_child_is_restarted_and_sigterm_stops_all(tmp_path: Path) -> None:
    supervisor, thread, outcome = _supervise(tmp_path, 2)
    first = supervisor.children[0]
    os.kill(first.pid, signal.SIGKILL)
    _wait(lambda: supervisor.children[0] is not first and supervisor.children[0].poll() is None)
    assert len(supervisor.restarts[0]) == 1 and not supervisor.restarts[1]
    # The new child is ready for SIGTERM once it wrote its pid (its handler is set).
    pid_file = tmp_path / "pid-0"
    _wait(lambda: pid_file.read_text() == str(supervisor.children[0].pid))
    supervisor.signalled(signal.SIGTERM)
    thread.join(20)
    assert outcome == [0]
    assert all(child.poll() == 0 for child in supervisor.children.values())


def test_exit_status_reflects_a_child_that_did_not_stop_cleanly(tmp_path: Path) -> None:
    supervisor, thread, outcome = _supervise(tmp_path, 2, status_on_term=3)
    supervisor.signalled(signal.SIGTERM)
    thread.join(20)
    assert outcome == [3]


def test_a_crash_loop_stops_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "MAX_RESTARTS", 1)
    supervisor, thread, outcome = _supervise(tmp_path, 2)
    for _ in range(2):
        child = supervisor.children[1]
        os.kill(child.pid, signal.SIGKILL)
        _wait(lambda c=child: supervisor.children[1] is not c or supervisor.stopping)
    thread.join(20)
    assert outcome == [1]
    assert supervisor.children[0].poll() == 0  # the healthy one was stopped cleanly
