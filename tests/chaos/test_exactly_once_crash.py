"""Exactly-once under kill -9, in the manner of Kafka Streams' EOS system test.

30,000 keyed records over 6 partitions; three workers of an app that echoes every record and
keeps (and emits) a per-key sum; workers are killed with SIGKILL at random moments and
restarted, and one is frozen with SIGSTOP until its partitions move (a zombie), then
resumed. Afterwards, read_committed: the echo topic equals the input record by record per
partition, the emitted sums are exactly the running sums, the table equals the totals, and
a marker written after the run is the next record on every output partition.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.kafkatools import (
    WorkerProcess,
    group_settled,
    produce,
    read_all,
    wait_committed,
    wait_until,
)

PARTITIONS = 6
RECORDS = 30_000


def _by_partition(messages: list[Any]) -> dict[int, list[tuple[bytes, bytes]]]:
    result: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for message in messages:
        result[message.partition()].append((message.key(), message.value()))
    return result


def test_kill_9_and_a_zombie_leave_exactly_once_results(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("eos-crash"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_ECHO": create_topic("echo", partitions=PARTITIONS),
        "TEST_SUMS": create_topic("sums", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
        "TEST_DELAY": "0.002",
    }
    records = [(f"k{rng.randrange(200)}", rng.randrange(1, 100)) for _ in range(RECORDS)]
    produce(kafka_bootstrap, env["TEST_SRC"], ((k.encode(), str(v).encode()) for k, v in records))

    def start(name: str) -> WorkerProcess:
        worker_env = {**env, "STREAMER_STATE_DIR": str(tmp_path / f"state-{name}")}
        return WorkerProcess("tests.apps.eos", worker_env, tmp_path, name, instance=name)

    names = ["w0", "w1", "w2"]
    workers = {name: start(name) for name in names}
    ended: list[WorkerProcess] = []
    try:
        wait_until(group_settled(kafka_bootstrap, env["TEST_APP_ID"], 3), "3 workers joined",
                   workers=workers.values())  # fmt: skip
        # The fault schedule: kill -9 random workers at random moments (a seeded rng, so
        # each run is the same chaos), restart them.
        for _ in range(6):
            time.sleep(rng.uniform(1.0, 3.0))  # pacing of the fault schedule, not a wait
            victim = rng.choice(names)
            workers[victim].kill()
            ended.append(workers[victim])
            time.sleep(rng.uniform(0.0, 1.0))  # pacing: down for a moment before the restart
            workers[victim] = start(victim)
        # The restarted workers are members again (a restart still joining when frozen would
        # be no zombie: it never owned anything).
        rejoined = group_settled(kafka_bootstrap, env["TEST_APP_ID"], 3)
        wait_until(rejoined, "the restarted workers did not all rejoin", workers=workers.values())
        zombie = workers["w1"]  # frozen past its session timeout: its partitions move
        zombie.proc.send_signal(signal.SIGSTOP)
        # Frozen until the broker expelled it and the other two took its partitions.
        wait_until(
            group_settled(kafka_bootstrap, env["TEST_APP_ID"], 2, without="w1"),
            "the frozen worker's partitions never moved",
            timeout=180,
        )
        zombie.proc.send_signal(signal.SIGCONT)

        wait_committed(
            kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, timeout=240
        )
        for worker in workers.values():
            worker.stop()
    finally:
        for worker in [*workers.values(), *ended]:
            worker.close()

    source = _by_partition(read_all(kafka_bootstrap, env["TEST_SRC"], expect=RECORDS))
    echo = _by_partition(read_all(kafka_bootstrap, env["TEST_ECHO"], expect=RECORDS))
    for partition in range(PARTITIONS):
        assert echo[partition] == source[partition], f"echo differs on partition {partition}"

    running: Counter[str] = Counter()
    expected_sums: dict[str, list[int]] = defaultdict(list)
    for key, value in records:
        running[key] += value
        expected_sums[key].append(running[key])
    emitted: dict[str, list[int]] = defaultdict(list)
    for message in read_all(kafka_bootstrap, env["TEST_SUMS"], expect=RECORDS):
        emitted[message.key().decode()].append(int(message.value()))
    assert emitted == expected_sums

    changelog = read_all(kafka_bootstrap, f"{env['TEST_APP_ID']}-sums-changelog", idle=2)
    assert {m.key().decode(): int(m.value()) for m in changelog} == dict(running)

    # No hanging transaction: a marker written now is readable right after the data.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for topic in (env["TEST_ECHO"], env["TEST_SUMS"]):
        for partition in range(PARTITIONS):
            producer.produce(topic, b"marker", b"marker", partition)
    producer.flush(30)
    for topic in (env["TEST_ECHO"], env["TEST_SUMS"]):
        tails = _by_partition(read_all(kafka_bootstrap, topic, expect=RECORDS + PARTITIONS))
        for partition in range(PARTITIONS):
            assert tails[partition][-1] == (b"marker", b"marker")
    zombie_log = zombie.log()
    assert "lost" in zombie_log or "abort" in zombie_log or "fenced" in zombie_log
