"""Non-blocking retries on the real broker: failed events go through the retry topics and
come back when due, across a kill -9 of the worker; under exactly-once every event's
output is committed once (read_committed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.kafkatools import WorkerProcess, distinct_outputs, produce, read_all, wait_until

TOTAL = 300
FAIL_ONCE = set(range(0, TOTAL, 10))  # back from retry topic 1
FAIL_TWICE = set(range(5, TOTAL, 30))  # back from retry topic 2
FAIL_ALWAYS = {7, 77}  # dead-lettered after the last retry topic


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_retried_events_come_back_from_the_retry_topics_across_kill_9(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, guarantee: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    for value in FAIL_ONCE - FAIL_TWICE:
        (marks / f"fail-{value}").write_text("1")
    for value in FAIL_TWICE:
        (marks / f"fail-{value}").write_text("2")
    for value in FAIL_ALWAYS:
        (marks / f"fail-{value}").write_text("99")
    app_id = unique_name("retry")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "STREAMER_COMMIT_INTERVAL": "0.3",
        "TEST_APP_ID": app_id,
        "TEST_SRC": create_topic("src", partitions=3),
        "TEST_OUT": create_topic("out", partitions=3),
        "TEST_GUARANTEE": guarantee,
        "TEST_MARK_DIR": str(marks),
    }
    produce(kafka_bootstrap, env["TEST_SRC"],
            ((f"k{i % 11}".encode(), str(i).encode()) for i in range(TOTAL)))  # fmt: skip
    expected = set(range(TOTAL)) - FAIL_ALWAYS
    worker = WorkerProcess("tests.apps.retrying", env, tmp_path, "w1", instance="one")
    try:
        # Kill -9 once events came back from retry topic 1, with others still in retry.
        wait_until(
            lambda: (marks / "fail-0").read_text() == "0",
            "no event came back from the first retry topic",
            log_of=worker,
        )
        worker.kill()
        worker = WorkerProcess("tests.apps.retrying", env, tmp_path, "w2", instance="one")
        dlq = f"{app_id}-work-dlq"
        wait_until(
            lambda: len(read_all(kafka_bootstrap, dlq, expect=2, timeout=2, idle=1)) >= 2,
            "the always-failing events did not reach the dead-letter topic",
            log_of=worker,
        )
        # Every output, however long the restarted worker takes on a busy machine.
        distinct_outputs(kafka_bootstrap, env["TEST_OUT"], {str(i) for i in expected}, 240)
        outputs = read_all(kafka_bootstrap, env["TEST_OUT"], idle=2)
        worker.stop()
    finally:
        worker.close()
    counts = Counter(int(m.value()) for m in outputs)
    assert set(counts) == expected, "an event was lost"
    if guarantee == "exactly_once":
        assert set(counts.values()) == {1}, "an output was committed twice"
    letters = read_all(kafka_bootstrap, dlq, expect=2)
    lettered = Counter(int(m.value()) for m in letters)
    assert set(lettered) == FAIL_ALWAYS  # at least once: a kill may repeat one
    if guarantee == "exactly_once":
        assert set(lettered.values()) == {1}
    for message in letters:
        headers = dict(message.headers() or [])
        assert headers["streamer.source.topic"] == f"{app_id}-work-retry-2".encode()
    assert "sent to" in worker.log() and "-work-retry-2, to be processed again in 4s" in (
        (tmp_path / "w1.log").read_text() + worker.log()
    )
