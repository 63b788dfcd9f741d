"""The command line as a new user meets it, without a broker (issue 17, items 1-3).

Each test types the command as a user would (``python -m streamer ...`` in the user's
directory) and checks the exact output and the exit code.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.kafkatools import run_cli

GOOD_APP = """\
import streamer

totals_app = streamer.App("payments", brokers="127.0.0.1:1")
payments = totals_app.topic("payments", key_type=str, value_type=dict)


@totals_app.agent(payments)
async def total(stream):
    async for event in stream:
        pass
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- 1. loading an app by file path; errors inside the user's module ------------------------


def test_app_by_file_path_and_attribute(tmp_path: Path) -> None:
    _write(tmp_path, "payments.py", GOOD_APP)
    result = run_cli("--timeout", "0.5", "worker", "./payments.py:totals_app", cwd=tmp_path)
    # Loaded (it got as far as the broker), which 'the package argument is required' never did.
    assert _one_error_line(result).startswith("error: cannot reach Kafka at 127.0.0.1:1: ")


def test_app_file_inside_a_package_keeps_relative_imports(tmp_path: Path) -> None:
    _write(tmp_path, "shop/__init__.py", "")
    _write(tmp_path, "shop/names.py", "APP_ID = 'shop'\n")
    _write(tmp_path, "shop/app.py", GOOD_APP.replace('"payments", b', "APP_ID, b").replace(
        "import streamer\n", "import streamer\n\nfrom .names import APP_ID\n"
    ))  # fmt: skip
    result = run_cli("--timeout", "0.5", "worker", "shop/app.py", cwd=tmp_path)
    assert _one_error_line(result).startswith("error: cannot reach Kafka at 127.0.0.1:1: ")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import streamer\napp = streamer.App('x'\n",
            "error: broken.py:2: SyntaxError: '(' was never closed (while loading app "
            "'broken.py'; --debug shows the traceback)",
        ),
        (
            "import streamer\nimport paymnets_lib\n",
            "error: broken.py:2: ModuleNotFoundError: No module named 'paymnets_lib' (while "
            "loading app 'broken.py'; --debug shows the traceback)",
        ),
        (
            "import streamer\n\n\ndef build():\n    return streamer.App(app_id)\n\n\n"
            "app = build()\n",
            "error: broken.py:5: NameError: name 'app_id' is not defined (while loading app "
            "'broken.py'; --debug shows the traceback)",
        ),
    ],
    ids=["syntax", "import", "name"],
)
def test_error_in_the_app_module_is_one_line_at_its_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    _write(tmp_path, "broken.py", source)
    assert _one_error_line(run_cli("worker", "broken.py", cwd=tmp_path)) == expected


def test_debug_shows_the_traceback_of_the_app_module(tmp_path: Path) -> None:
    _write(tmp_path, "broken.py", "import streamer\nimport paymnets_lib\n")
    result = run_cli("--debug", "worker", "broken.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'broken.py", line 2' in result.stderr


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nope.py", "error: no file 'nope.py' (from app path 'nope.py'); check the path"),
        ("payments.py:nope", "error: module 'payments' has no attribute 'nope'; its Apps: "
         "totals_app"),
        ("./payments.py:payments", "error: './payments.py:payments' is a Topic, not a "
         "streamer.App"),
    ],
)  # fmt: skip
def test_mistakes_in_a_file_path(tmp_path: Path, path: str, expected: str) -> None:
    _write(tmp_path, "payments.py", GOOD_APP)
    assert _one_error_line(run_cli("worker", path, cwd=tmp_path)) == expected


# -- 2. settings ---------------------------------------------------------------------------


def test_misspelt_setting_warns_with_the_closest_name(tmp_path: Path) -> None:
    _write(tmp_path, "payments.py", GOOD_APP)
    result = run_cli(
        "--timeout", "0.5", "worker", "payments.py",
        env={"STREAMER_COMIT_INTERVAL": "5"}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].endswith(
        "streamer.settings: unknown setting STREAMER_COMIT_INTERVAL is ignored; "
        "did you mean STREAMER_COMMIT_INTERVAL?"
    )


def test_invalid_settings_one_line_per_field(tmp_path: Path) -> None:
    _write(tmp_path, "payments.py", GOOD_APP)
    result = run_cli(
        "worker", "payments.py",
        env={"STREAMER_LANE_BUFFER": "lots", "STREAMER_COMMIT_INTERVAL": "-1"}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-3:] == [
        "error: invalid settings (2 fields):",
        "  commit_interval: Input should be greater than 0 (argument 'commit_interval' or env "
        "STREAMER_COMMIT_INTERVAL)",
        "  lane_buffer: Input should be a valid integer, unable to parse string as an integer "
        "(argument 'lane_buffer' or env STREAMER_LANE_BUFFER)",
    ]


# -- 3. broker down ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "env", "waited"),
    [
        ((), {}, "5s"),
        (("--timeout", "1.5"), {}, "1.5s"),
        ((), {"STREAMER_CONNECT_TIMEOUT": "2"}, "2s"),
    ],
    ids=["default", "flag", "setting"],
)  # fmt: skip
def test_broker_down_fails_within_the_timeout(
    options: tuple[str, ...], env: dict[str, str], waited: str
) -> None:
    result = run_cli(
        *options, "worker", "apps.wordcount", env={"STREAMER_BROKERS": "127.0.0.1:1", **env}
    )
    line = _one_error_line(result)
    assert line.startswith(
        f"error: cannot reach Kafka at 127.0.0.1:1: no broker answered a metadata request "
        f"within {waited} (127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
        "Connection refused"
    ), line
    assert line.endswith(
        "is the broker running? `streamer kafka up` starts a local one; --timeout "
        "(STREAMER_CONNECT_TIMEOUT) waits longer"
    )


def test_send_with_the_broker_down_is_one_line() -> None:
    result = run_cli("--timeout", "1", "send", "orders", "--brokers", "127.0.0.1:1", "--value", "1")
    line = _one_error_line(result)
    assert line.startswith(
        "error: cannot reach Kafka at 127.0.0.1:1: no record acknowledged within 1s "
        "(127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    ), line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command",
    [
        ("worker", "apps.wordcount"),
        ("replay", "apps.wordcount", "--topic", "demo-lines", "--from-offset", "0"),
        ("offsets", "show", "apps.wordcount"),
        ("dlq", "show", "apps.wordcount"),
        ("status", "apps.wordcount", "--once"),
    ],
    ids=lambda command: command[0],
)
def test_every_command_fails_fast_when_the_broker_is_down(command: tuple[str, ...]) -> None:
    result = run_cli("--timeout", "1", *command, env={"STREAMER_BROKERS": "127.0.0.1:1"})
    assert _one_error_line(result).startswith(
        "error: cannot reach Kafka at 127.0.0.1:1: no broker answered a metadata request "
        "within 1s (127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    )
