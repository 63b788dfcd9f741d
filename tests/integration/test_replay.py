"""Reprocessing history: replay a range outside the group, and reset the group to a time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamer import App, ConfigError, Event, Stream
from streamer.ops.replay import replay
from tests.kafkatools import (
    WorkerProcess,
    committed,
    end_offsets,
    produce,
    read_all,
    run_cli,
    run_until,
    wait_committed,
)

PARTITIONS = 4


def test_replay_processes_exactly_the_range_and_leaves_offsets(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("src", partitions=PARTITIONS)
    out = create_topic("out", partitions=PARTITIONS)
    app = App(unique_name("replay"), brokers=kafka_bootstrap, commit_interval=0.2)
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    sink = app.topic(out, key_type=str, value_type=str, partitions=PARTITIONS)
    seen: list[Event] = []

    @app.agent(source, sink=[sink], concurrency=2)
    async def echo(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            seen.append(event)
            yield event.value

    produce(kafka_bootstrap, src, ((f"k{i}".encode(), str(i).encode()) for i in range(10_000)))
    asyncio.run(run_until(app, lambda: len(seen) >= 10_000))
    before = committed(kafka_bootstrap, app.group_id, src, PARTITIONS)
    assert before == end_offsets(kafka_bootstrap, src, PARTITIONS)
    seen.clear()

    summary = asyncio.run(replay(app, src, partitions=[2], from_offset=100, to_offset=199))
    assert sorted((e.partition, e.offset) for e in seen) == [(2, o) for o in range(100, 200)]
    assert (summary.records, summary.outputs, summary.errors) == (100, 100, 0)
    assert committed(kafka_bootstrap, app.group_id, src, PARTITIONS) == before
    assert len(read_all(kafka_bootstrap, out, expect=10_100)) == 10_100

    seen.clear()
    dry = asyncio.run(replay(app, src, partitions=[1], from_offset=0, to_offset=9, dry_run=True))
    assert len(seen) == 10 and dry.outputs == 10 and len(dry.printed) == 10
    assert len(read_all(kafka_bootstrap, out, idle=1)) == 10_100  # none sent (read to the end)

    with pytest.raises(ConfigError, match="outside the retained range"):
        asyncio.run(replay(app, src, partitions=[0], from_offset=1_000_000))
    with pytest.raises(ConfigError, match="no partition 9"):
        asyncio.run(replay(app, src, partitions=[9], from_offset=0))
    with pytest.raises(ConfigError, match="no agent"):
        asyncio.run(replay(app, "not-a-topic", from_offset=0))
    with pytest.raises(ConfigError, match="no record at or after"):
        asyncio.run(replay(app, src, from_datetime="2999-01-01T00:00:00Z"))


def test_cli_replay_dry_run_prints_outputs(kafka_bootstrap: str, create_topic, unique_name) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("echo"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    produce(kafka_bootstrap, env["TEST_SRC"], ((b"k", str(i).encode()) for i in range(300)))
    ends = end_offsets(kafka_bootstrap, env["TEST_SRC"], PARTITIONS)
    full = [p for p, end in ends.items() if end]
    assert len(full) == 1  # one key, so one partition holds every record
    result = run_cli(
        "replay", "tests.apps.echo", "--topic", env["TEST_SRC"], "--partition", str(full[0]),
        "--from-offset", "100", "--to-offset", "199", "--dry-run",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[:-1] == [f"{env['TEST_OUT']}\tkey=k\tvalue=k:{i}" for i in range(100, 200)]
    assert lines[-1].startswith("replayed 100 records: 100 outputs printed (dry run), 0 errors")
    assert read_all(kafka_bootstrap, env["TEST_OUT"], timeout=3, idle=1) == []


def _produce_at(bootstrap: str, topic: str, records: list[tuple[str, int]]) -> None:
    """Produce (key, timestamp ms) records; the value is the record's index."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    for index, (key, timestamp) in enumerate(records):
        producer.produce(topic, str(index).encode(), key.encode(), timestamp=timestamp)
    producer.flush(30)


def test_reset_to_a_datetime_reprocesses_exactly_from_then(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("echo"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_OUT": create_topic("out", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    t0 = 1_700_000_000_000
    middle = t0 + 60_000
    records = [(f"k{i % 50}", t0 + (i // 5_000) * 60_000 + i % 5_000) for i in range(10_000)]
    _produce_at(kafka_bootstrap, env["TEST_SRC"], records)
    worker = WorkerProcess("tests.apps.echo", env, tmp_path, "first")
    wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=worker)
    worker.terminate()
    worker.close()

    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle / 1000))
    dry = run_cli("offsets", "reset", "tests.apps.echo", "--topic", env["TEST_SRC"],
                    "--to-datetime", iso, env=env)  # fmt: skip
    assert dry.returncode == 0 and "dry run" in dry.stdout
    done = run_cli("offsets", "reset", "tests.apps.echo", "--topic", env["TEST_SRC"],
                     "--to-datetime", iso, "--execute", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    worker = WorkerProcess("tests.apps.echo", env, tmp_path, "second")
    wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=worker)
    worker.terminate()
    worker.close()

    outputs = Counter(
        m.value().decode() for m in read_all(kafka_bootstrap, env["TEST_OUT"], expect=15_000)
    )
    once = Counter({f"{k}:{i}": 1 for i, (k, _) in enumerate(records)})
    again = Counter({f"{k}:{i}": 1 for i, (k, ts) in enumerate(records) if ts >= middle})
    assert outputs == once + again


def test_reset_state_rebuilds_tables_from_the_replayed_range(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "TEST_APP_ID": unique_name("counter"),
        "TEST_SRC": create_topic("src", partitions=PARTITIONS),
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    t0 = 1_700_000_000_000
    records = [(f"k{i % 30}", t0 + (i // 2_000) * 60_000 + i % 2_000) for i in range(4_000)]
    _produce_at(kafka_bootstrap, env["TEST_SRC"], records)
    worker = WorkerProcess("tests.apps.counter", env, tmp_path, "first")
    wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=worker)
    worker.terminate()
    worker.close()

    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((t0 + 60_000) / 1000))
    done = run_cli("offsets", "reset", "tests.apps.counter", "--topic", env["TEST_SRC"],
                     "--to-datetime", iso, "--execute", "--reset-state", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    worker = WorkerProcess("tests.apps.counter", env, tmp_path, "second")
    wait_committed(kafka_bootstrap, env["TEST_APP_ID"], env["TEST_SRC"], PARTITIONS, worker=worker)
    worker.terminate()
    worker.close()
    changelog = read_all(kafka_bootstrap, f"{env['TEST_APP_ID']}-counts-changelog", idle=2)
    table = {m.key().decode(): int(m.value()) for m in changelog}
    # (Seen once: every count the whole topic's, as if the reset's offsets were gone; the
    # reset's own output and the second worker's log say where to look.)
    assert table == Counter(k for k, ts in records if ts >= t0 + 60_000), (
        f"reset printed:\n{done.stdout}\n{done.stderr}\nsecond worker:\n{worker.log()[-3000:]}"
    )
