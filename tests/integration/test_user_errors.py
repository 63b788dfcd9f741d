"""User mistakes that need a broker to be seen: one line each, exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.kafkatools import ROOT


def test_missing_topic_with_auto_creation_off(kafka_bootstrap: str, unique_name) -> None:
    prefix = unique_name("none")
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "worker", "apps.wordcount"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={
            **os.environ,
            "STREAMER_BROKERS": kafka_bootstrap,
            "STREAMER_DEMO_PREFIX": prefix,
            "STREAMER_TOPIC_AUTO_CREATE": "false",
        },
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: topic '{prefix}-lines' does not exist and topic_auto_create is off; create it "
        "(kafka-topics --create) or set STREAMER_TOPIC_AUTO_CREATE=true"
    ]


def test_partition_count_mismatch(kafka_bootstrap: str, create_topic, unique_name) -> None:
    src = create_topic("lines", partitions=2)
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "worker", "tests.apps.echo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={
            **os.environ,
            "STREAMER_BROKERS": kafka_bootstrap,
            "TEST_APP_ID": unique_name("mismatch"),
            "TEST_SRC": src,
            "TEST_OUT": unique_name("out"),
            "TEST_PARTITIONS": "4",
        },
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: topic '{src}' has 2 partitions in the cluster but is declared with "
        "partitions=4; declare partitions=2, or recreate the topic (its data would be lost)"
    ]
