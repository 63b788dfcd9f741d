"""Progress of recovery (issue 17, item 6): a bar on a terminal, log lines elsewhere; and the
maintained libraries that replaced hand-written helpers (durations, process checks, locks)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.kafka import jars, local
from streamer.kafka.memory import MemoryBackend, MemoryBroker, Record
from streamer.ops.offsets import parse_duration
from streamer.state.recovery import restore
from streamer.state.store import PartitionStore
from tests.kafkatools import wait_until


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _restore(tmp_path: Path, records: int) -> int:
    broker = MemoryBroker("progress-recovery")
    broker.create_topic("counts-changelog", 1)
    for i in range(records):
        broker.append("counts-changelog", 0, Record(f"k{i}".encode(), b"1", None, 0, -1))
    store = PartitionStore.open_or_rebuild(tmp_path / "store")
    try:
        result = restore(
            store, "counts[0]", "counts-changelog", 0, {}, MemoryBackend(broker),
            threading.Event(),
        )  # fmt: skip
    finally:
        store.close()
    return result.restored


def test_recovery_on_a_terminal_draws_a_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert _restore(tmp_path, 25_000) == 25_000
    screen = terminal.getvalue()
    assert "restoring counts[0]" in screen
    assert "25000/25000" in screen and "100%" in screen and "records/s" in screen


def test_recovery_elsewhere_logs_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    captured = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", captured)
    with caplog.at_level(logging.INFO, logger="streamer.recovery"):
        assert _restore(tmp_path, 100) == 100
    assert captured.getvalue() == ""
    assert "counts[0]: restored 100 records in" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", timedelta(hours=1)),
        ("90m", timedelta(minutes=90)),
        ("2d12h", timedelta(days=2, hours=12)),
        ("1.5h", timedelta(minutes=90)),
        ("30s", timedelta(seconds=30)),
        ("PT1H", timedelta(hours=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "'soon' is not a duration (for example 1h, 30m, 2d12h or PT1H)"),
        ("0s", "duration '0s' must be longer than zero"),
        ("P", "'P' is not a duration (for example 1h, 30m, 2d12h or PT1H)"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_process_checks() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert local._reap_and_check_alive(child.pid)
        # Right after Popen the child may not have exec'd yet (its command line is then the
        # parent's, or empty): look until it has, as a busy machine can take a moment.
        expected = ["-c", "import time; time.sleep(30)"]
        wait_until(lambda: local._cmdline(child.pid)[1:] == expected, "the child never exec'd",
                   timeout=30)  # fmt: skip
    finally:
        child.kill()
        child.wait()
    assert not local._reap_and_check_alive(child.pid)
    assert local._cmdline(child.pid) == []
    assert local._reap_and_check_alive(os.getpid())


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "deep" / "x.lock"
    probe = (
        "import sys; from filelock import FileLock, Timeout\n"
        "try:\n    FileLock(sys.argv[1]).acquire(timeout=0.2)\nexcept Timeout:\n    sys.exit(3)\n"
    )
    with jars.file_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], check=False)
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], check=False)
    assert (held.returncode, free.returncode) == (3, 0)
