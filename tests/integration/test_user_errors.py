"""User mistakes that need a broker to be seen: one line each, exit 1, no traceback."""

from __future__ import annotations

import subprocess

from tests.kafkatools import run_cli


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_missing_topic_with_auto_creation_off(kafka_bootstrap: str, unique_name) -> None:
    prefix = unique_name("none")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_DEMO_PREFIX": prefix,
        "STREAMER_TOPIC_AUTO_CREATE": "false",
    }
    assert _error_lines(run_cli("worker", "apps.wordcount", env=env, timeout=60)) == [
        f"error: topic '{prefix}-lines' does not exist and topic_auto_create is off; create it "
        "(kafka-topics --create) or set STREAMER_TOPIC_AUTO_CREATE=true"
    ]


def test_partition_count_mismatch(kafka_bootstrap: str, create_topic, unique_name) -> None:
    src = create_topic("lines", partitions=2)
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("mismatch"),
        "TEST_SRC": src,
        "TEST_OUT": unique_name("out"),
        "TEST_PARTITIONS": "4",
    }
    assert _error_lines(run_cli("worker", "tests.apps.echo", env=env, timeout=60)) == [
        f"error: topic '{src}' has 2 partitions in the cluster but is declared with "
        "partitions=4; declare partitions=2, or recreate the topic (its data would be lost)"
    ]
