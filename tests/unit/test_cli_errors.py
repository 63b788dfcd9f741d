"""User mistakes and the exact one line each gets: exit 1, no traceback (issue 7's table).

- bad app path: ``error: no module named 'apps.nope' (from app path 'apps.nope'); ...``
- missing attribute: ``error: module 'apps.wordcount' has no attribute 'nope'``
- invalid setting: ``error: invalid settings: lane_buffer: ... (argument ... or env ...)``
- broker unreachable: ``error: cannot reach Kafka at 127.0.0.1:1: no broker answered ...``
- Java missing: ``error: Java 17+ is needed to run the local Kafka broker: ...``
- Maven missing: ``error: Maven is needed once to download Apache Kafka 4.1.1's jars: ...``

(The missing topic with auto-creation off needs a broker: tests/integration/test_user_errors.py.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.kafka.ports import free_port_pair
from tests.kafkatools import ROOT, run_cli


def _streamer(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=60)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ("worker", "apps.nope"),
            {},
            "error: no module named 'apps.nope' (from app path 'apps.nope'); check the "
            f"spelling and that it is importable from {ROOT} (or give the file's path)",
        ),
        (
            ("worker", "apps.wordcount:nope"),
            {},
            "error: module 'apps.wordcount' has no attribute 'nope'; its Apps: app",
        ),
        (
            ("worker", "apps.wordcount:lines"),
            {},
            "error: 'apps.wordcount:lines' is a Topic, not a streamer.App",
        ),
        (
            ("worker", "apps.wordcount"),
            {"STREAMER_LANE_BUFFER": "lots"},
            "error: invalid settings: lane_buffer: Input should be a valid integer, unable to "
            "parse string as an integer (argument 'lane_buffer' or env STREAMER_LANE_BUFFER)",
        ),
        (
            ("send", "t", "--value", "{oops", "--app", "apps.orders", "--brokers", "x:1"),
            {},
            "error: --brokers and --app both given; the app names its brokers",
        ),
    ],
)
def test_mistakes_without_a_broker(
    args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    assert _one_error_line(_streamer(*args, **env)) == expected


def test_unreachable_broker_is_named() -> None:
    line = _one_error_line(_streamer("worker", "apps.wordcount", STREAMER_BROKERS="127.0.0.1:1"))
    assert line.startswith("error: cannot reach Kafka at 127.0.0.1:1: no broker answered ")
    assert "is the broker running? `streamer kafka up` starts a local one" in line


def _path_without(*tools: str, tmp_path: Path, keep: tuple[str, ...] = ()) -> str:
    """A PATH holding python (and ``keep``), so ``tools`` cannot be found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for tool in keep:
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    assert all(shutil.which(tool, path=str(bin_dir)) is None for tool in tools)
    return str(bin_dir)


def test_java_missing_for_the_local_broker(tmp_path: Path) -> None:
    port = free_port_pair()
    line = _one_error_line(
        _streamer(
            "kafka", "up", "--port", str(port),
            PATH=_path_without("java", tmp_path=tmp_path), KAFKA_HOME="", JAVA_HOME="",
        )
    )  # fmt: skip
    assert line == (
        "error: Java 17+ is needed to run the local Kafka broker: install a JDK (apt-get install "
        "openjdk-17-jre-headless), or run Kafka elsewhere (docker compose up -d) and set "
        "STREAMER_TEST_BROKERS to its address"
    )


def test_maven_missing_when_the_jars_are_not_cached(tmp_path: Path) -> None:
    port = free_port_pair()
    line = _one_error_line(
        _streamer(
            "kafka", "up", "--port", str(port),
            PATH=_path_without("mvn", tmp_path=tmp_path, keep=("java",)),
            XDG_CACHE_HOME=str(tmp_path / "empty-cache"), KAFKA_HOME="",
        )
    )  # fmt: skip
    assert line.startswith("error: Maven is needed once to download Apache Kafka 4.1.1's jars: ")
