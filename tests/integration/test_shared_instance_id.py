"""Two worker processes started with the same ``--instance`` (a deployment mistake): each
join fences the other, and librdkafka reports a fenced static member as a fatal consumer
error. A worker rejoins after such an error (a broker restart causes it too), so the two
fence each other back and forth, until one of them has been fenced too often: it exits 1
with one line naming the shared instance id, and the other one serves every partition."""

from __future__ import annotations

from pathlib import Path

from tests.kafkatools import WorkerProcess, produce, read_all, wait_committed, wait_until

PARTITIONS = 2


def test_two_workers_with_one_instance_id_end_with_one_line_and_one_survivor(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("shared-instance"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    first = WorkerProcess("tests.apps.echo", env, tmp_path, "first", instance="dup")
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: "assigned" in first.log(), "the first worker got nothing",
                   workers=[first])  # fmt: skip
        second = WorkerProcess("tests.apps.echo", env, tmp_path, "second", instance="dup")
        pair = (first, second)
        wait_until(lambda: not all(w.alive() for w in pair), "neither worker gave up",
                   timeout=240)  # fmt: skip
        (loser,) = [w for w in pair if not w.alive()]
        (survivor,) = [w for w in pair if w.alive()]
        assert loser.proc.returncode == 1
        last = loser.log().strip().splitlines()[-1]
        assert "group.instance.id 'dup'" in last and "give each worker its own" in last, last
        assert "Traceback" not in loser.log()

        # The survivor goes on serving every partition.
        produce(kafka_bootstrap, env["TEST_SRC"], [(f"k{i}".encode(), b"v") for i in range(50)])
        wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS,
                       worker=survivor)  # fmt: skip
        outputs = {m.value().decode() for m in read_all(kafka_bootstrap, env["TEST_OUT"], idle=1)}
        assert outputs == {f"k{i}:v" for i in range(50)}
        survivor.stop()
    finally:
        first.close()
        if second is not None:
            second.close()
