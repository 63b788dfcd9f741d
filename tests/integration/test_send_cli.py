"""`streamer send` as a user types it (issue 17, item 4): one record, JSON lines from a file or
stdin, the app's serdes, and the mistakes, each with its output and exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from confluent_kafka.admin import NewTopic

from tests.kafkatools import read_all, run_cli

POSITION = re.compile(r"^(?P<topic>[\w.-]+)\[(?P<partition>\d+)\]@(?P<offset>\d+)$")


def _positions(stdout: str) -> list[tuple[str, int, int]]:
    out = []
    for line in stdout.splitlines():
        match = POSITION.match(line)
        assert match, f"not topic[partition]@offset: {line!r}"
        out.append((match["topic"], int(match["partition"]), int(match["offset"])))
    return out


def test_one_record_prints_where_it_landed(kafka_bootstrap: str, create_topic) -> None:
    topic = create_topic("send-one", partitions=3)
    result = run_cli(
        "send", topic, "--key", "c1", "--value", '{"amount": 12.5}', "--header", "source=cli",
        env={"STREAMER_BROKERS": kafka_bootstrap},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ((name, partition, offset),) = _positions(result.stdout)
    assert (name, offset) == (topic, 0)
    assert result.stderr.strip().endswith(f"sent 1 record to {topic}")
    (message,) = read_all(kafka_bootstrap, topic, expect=1)
    assert message.partition() == partition
    assert (message.key(), message.value()) == (b"c1", b'{"amount":12.5}')
    assert message.headers() == [("source", b"cli")]


def test_json_lines_from_a_file_and_from_stdin(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    topic = create_topic("send-lines", partitions=2)
    lines = [
        {"key": "a", "value": {"n": 1}},
        {"key": "b", "value": "plain text", "headers": {"h": "v"}},
        {"value": 3, "partition": 1},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    env = {"STREAMER_BROKERS": kafka_bootstrap}
    from_file = run_cli("send", topic, "--file", str(path), env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert len(_positions(from_file.stdout)) == 3
    assert from_file.stderr.strip().endswith(f"sent 3 records to {topic}")
    from_stdin = run_cli("send", topic, "--quiet", env=env, stdin=path.read_text())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == ""
    assert from_stdin.stderr.strip().endswith(f"sent 3 records to {topic}")
    got = read_all(kafka_bootstrap, topic, expect=6)
    assert sorted((m.key() or b"", m.value()) for m in got) == sorted(
        [(b"a", b'{"n":1}'), (b"b", b"plain text"), (b"", b"3")] * 2
    )
    assert {m.partition() for m in got if m.key() is None} == {1}
    assert all(m.headers() == [("h", b"v")] for m in got if m.key() == b"b")


def test_app_serdes_validate_each_line(kafka_bootstrap: str, kafka_admin, unique_name) -> None:
    prefix = unique_name("send-app")
    env = {"STREAMER_BROKERS": kafka_bootstrap, "STREAMER_DEMO_PREFIX": prefix}
    topic = f"{prefix}-orders"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(timeout=30)
    good = {"key": "o1", "value": {"id": "o1", "customer": "c", "amount": 5}}
    bad = {"key": "o2", "value": {"id": "o2", "customer": "c", "amount": "lots"}}
    result = run_cli(
        "send", topic, "--app", "apps.orders", env=env,
        stdin=f"{json.dumps(good)}\n{json.dumps(bad)}\n",
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: topic {topic!r}: value not a valid Order: amount: ")
    # Records go out as they are read: the line before the bad one is sent, and shown.
    assert _positions(result.stdout) == [(topic, _positions(result.stdout)[0][1], 0)]


def test_unknown_topic_and_bad_lines_are_one_line(kafka_bootstrap: str, unique_name) -> None:
    env = {"STREAMER_BROKERS": kafka_bootstrap}
    missing = unique_name("send-missing")
    result = run_cli("--timeout", "2", "send", missing, "--value", "1", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {missing}: record from --value refused: Broker: Unknown topic or partition; "
        "0 of 1 sent; does the topic exist? `streamer worker APP` creates an app's declared "
        "topics"
    )
    result = run_cli("send", missing, env=env, stdin='{"k": 1}\n')
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: <stdin>:1: unknown field(s) k; a line has key, value, headers and partition"
    )
