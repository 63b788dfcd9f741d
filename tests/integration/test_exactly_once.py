"""Exactly-once on the real broker: outputs, table and offsets commit together, and the
work of an aborted transaction stays invisible to read_committed readers."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from tests.kafkatools import WorkerProcess, produce, read_all, wait_committed

PARTITIONS = 3


def test_aborted_transaction_is_invisible_and_redone_once(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "TEST_APP_ID": unique_name("eos"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_ECHO": create_topic("echo", partitions=PARTITIONS),
        "TEST_SUMS": create_topic("sums", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_BOOM_DIR": str(tmp_path),
    }
    values = [(f"k{i % 7}", 1 if i != 150 else -1) for i in range(300)]
    produce(kafka_bootstrap, env["TEST_SRC"], ((k.encode(), str(v).encode()) for k, v in values))
    worker = WorkerProcess("tests.apps.eos", env, tmp_path, "eos", instance="only")
    try:
        wait_committed(
            kafka_bootstrap,
            env["TEST_APP_ID"],
            env["TEST_SRC"],
            PARTITIONS,
            worker=worker,
            timeout=90,
        )
        worker.stop()
    finally:
        worker.close()
    log = worker.log()
    assert (tmp_path / "boomed").exists()
    assert "transaction aborted" in log and "rewound" in log

    committed_echo = read_all(kafka_bootstrap, env["TEST_ECHO"], expect=300)
    assert Counter((m.key().decode(), int(m.value())) for m in committed_echo) == Counter(values)
    everything = read_all(kafka_bootstrap, env["TEST_ECHO"], isolation="read_uncommitted", idle=2)
    assert len(everything) > len(committed_echo), "the aborted attempt wrote nothing?"

    # Sums: per key, the emitted running sums are exactly the prefix sums of its inputs.
    expected_runs: dict[str, list[int]] = defaultdict(list)
    totals: Counter[str] = Counter()
    for key, value in values:
        totals[key] += value
        expected_runs[key].append(totals[key])
    emitted: dict[str, list[int]] = defaultdict(list)
    for message in read_all(kafka_bootstrap, env["TEST_SUMS"], expect=300):
        emitted[message.key().decode()].append(int(message.value()))
    assert emitted == expected_runs
    changelog = read_all(kafka_bootstrap, f"{env['TEST_APP_ID']}-sums-changelog", idle=2)
    assert {m.key().decode(): int(m.value()) for m in changelog} == dict(totals)
