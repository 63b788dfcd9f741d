"""Progress on long work (issue 17, item 6): a bar with rate and ETA on a terminal, plain
lines when logs are JSON or output is not a terminal."""

from __future__ import annotations

import json

from tests.kafkatools import end_offsets, produce, run_cli, run_in_terminal

PARTITIONS = 2


def _echo_env(kafka_bootstrap: str, create_topic, unique_name) -> dict[str, str]:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("progress"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    produce(kafka_bootstrap, env["TEST_SRC"], ((b"k", str(i).encode()) for i in range(500)))
    assert sum(end_offsets(kafka_bootstrap, env["TEST_SRC"], PARTITIONS).values()) == 500
    return env


def _replay(env: dict[str, str]) -> tuple[str, ...]:
    return ("replay", "tests.apps.echo", "--topic", env["TEST_SRC"], "--from-offset", "0")


def test_replay_on_a_terminal_shows_a_bar(kafka_bootstrap: str, create_topic, unique_name) -> None:
    env = _echo_env(kafka_bootstrap, create_topic, unique_name)
    code, screen = run_in_terminal(*_replay(env), env=env)
    assert code == 0, screen
    assert f"replaying {env['TEST_SRC']}" in screen
    assert "500/500" in screen and "100%" in screen and "records/s" in screen
    assert "\x1b[" in screen  # drawn in place, with terminal control sequences
    assert "replayed 500 records: 500 outputs sent, 0 errors" in screen


def test_json_logs_on_a_terminal_get_lines_not_a_bar(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    env = _echo_env(kafka_bootstrap, create_topic, unique_name)
    code, screen = run_in_terminal("--log-format", "json", *_replay(env), env=env)
    assert code == 0, screen
    assert "\x1b[" not in screen
    lines = [line for line in screen.replace("\r\n", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("replayed 500 records: 500 outputs sent, 0 errors")
    logged = [json.loads(line) for line in lines[:-1]]  # every other line is a JSON object
    assert any(entry["message"].startswith("replay done: 500 records") for entry in logged)


def test_not_a_terminal_gets_plain_lines(kafka_bootstrap: str, create_topic, unique_name) -> None:
    env = _echo_env(kafka_bootstrap, create_topic, unique_name)
    result = run_cli(*_replay(env), env=env)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stderr + result.stdout
    assert "replay done: 500 records, 500 outputs, 0 errors" in result.stderr
    assert result.stdout.strip().startswith("replayed 500 records: 500 outputs sent, 0 errors")


def test_status_on_a_terminal_redraws_in_place(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("status-live"),
        "TEST_SRC": create_topic("src", partitions=3),
        "TEST_PARTITIONS": "3",
    }
    code, screen = run_in_terminal(
        "status", "tests.apps.status_app", "--interval", "0.2", env=env,
        interrupt_after=("total lag", 3), timeout=300,  # a hang guard: refreshes may be slow
    )  # fmt: skip
    assert code == 0, screen
    assert screen.count("total lag") >= 3
    # rich's Live redraws the view where it was: cursor up and erase, no screen clearing.
    assert "\x1b[1A" in screen and "\x1b[2K" in screen
    assert "\x1b[2J" not in screen
