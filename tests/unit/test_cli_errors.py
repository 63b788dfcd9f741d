"""User mistakes on the command line end in one readable line, exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.kafkatools import ROOT


def _streamer(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={**os.environ, **env},
    )


def test_bad_app_path() -> None:
    result = _streamer("worker", "apps.does_not_exist")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no module named 'apps.does_not_exist' (from app path 'apps.does_not_exist'); "
        f"check the spelling and that it is importable from {ROOT}"
    )


def test_unreachable_broker_is_named() -> None:
    result = _streamer("send", "some-topic", "--value", "1", "--brokers", "127.0.0.1:1")
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_with_unreachable_broker() -> None:
    result = _streamer("worker", "apps.wordcount", STREAMER_BROKERS="127.0.0.1:1")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot reach Kafka at 127.0.0.1:1")
    assert "Traceback" not in result.stderr


def test_invalid_setting_from_environment() -> None:
    result = _streamer("worker", "apps.wordcount", STREAMER_LANE_BUFFER="lots")
    assert result.returncode == 1
    assert "lane_buffer" in result.stderr and "STREAMER_LANE_BUFFER" in result.stderr
    assert "Traceback" not in result.stderr
