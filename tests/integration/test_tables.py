"""Tables on the real broker: counts, rebuild from the changelog, hand-over between workers."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

from streamer import App, Stream
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore, partition_path
from streamer.worker import transactions
from tests.kafkatools import end_offsets, produce, read_all, run_until

PARTITIONS = 6
KEYS = 1_000
EVENTS = 50_000


def _counting_app(
    bootstrap: str, app_id: str, src: str, state_dir: Path
) -> tuple[App, dict[str, int]]:
    app = App(app_id, brokers=bootstrap, state_dir=state_dir, commit_interval=0.5)
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    counts = app.table("counts", default=int, value_type=int)
    processed = {"events": 0}

    @app.agent(source, concurrency=2)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1
            processed["events"] += 1

    return app, processed


def _expected() -> Counter[str]:
    return Counter(f"key-{i % KEYS}" for i in range(EVENTS))


def test_counts_survive_losing_the_state_directory(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("clicks", partitions=PARTITIONS)
    app_id = unique_name("counter")
    produce(kafka_bootstrap, src, ((f"key-{i % KEYS}".encode(), b"1") for i in range(EVENTS)))
    app, processed = _counting_app(kafka_bootstrap, app_id, src, tmp_path)
    table = app.tables["counts"]
    snapshot: dict[str, int] = {}

    def done() -> bool:
        if processed["events"] < EVENTS:
            return False
        snapshot.update(table.as_dict())  # read while the worker still owns the partitions
        return True

    asyncio.run(run_until(app, done))
    assert snapshot == _expected()

    # The changelog holds every count: compacted to one record per key at most, plus
    # nothing else.
    changelog = read_all(kafka_bootstrap, table.changelog, idle=2)
    latest = {m.key().decode(): int(m.value()) for m in changelog}
    assert latest == _expected()

    # Lose the local state: a new worker rebuilds it from the changelog before processing.
    shutil.rmtree(tmp_path / app_id)
    produce(kafka_bootstrap, src, [(b"key-1", b"1")])
    app2, processed2 = _counting_app(kafka_bootstrap, app_id, src, tmp_path)
    table2 = app2.tables["counts"]
    rebuilt: dict[str, int] = {}

    def rebuilt_and_counted() -> bool:
        if processed2["events"] < 1 or len(table2.owned) < PARTITIONS:
            return False
        rebuilt.update(table2.as_dict())
        return True

    asyncio.run(run_until(app2, rebuilt_and_counted))
    expected = _expected()
    expected["key-1"] += 1
    assert processed2["events"] == 1  # only the new event: the rest was committed
    assert rebuilt == expected


def test_a_clean_stop_under_exactly_once_leaves_local_state_complete(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, monkeypatch
) -> None:
    """Under exactly-once RocksDB is written at most once a second (the changelog has every
    commit meanwhile); a worker that stops writes what it holds, so its local state ends
    where its changelog ends, and the next worker on that state restores nothing."""
    # Only a table partition's first commit reaches RocksDB before the stop: the rest is
    # held however slowly this machine runs.
    monkeypatch.setattr(transactions, "STORE_WRITE_INTERVAL", 3600.0)
    partitions, keys, events = 2, 50, 2_000
    src = create_topic("eos-clicks", partitions=partitions)
    app_id = unique_name("eos-counter")

    def feed(first: int) -> None:
        half = range(first, first + events // 2)
        produce(kafka_bootstrap, src, ((f"k{i % keys}".encode(), b"1") for i in half))

    feed(0)

    def counting_app() -> tuple[App, dict[str, int]]:
        app = App(
            app_id,
            brokers=kafka_bootstrap,
            state_dir=tmp_path,
            processing_guarantee="exactly_once",
        )
        source = app.topic(src, key_type=str, value_type=str, partitions=partitions)
        counts = app.table("counts", default=int, value_type=int)
        processed = {"events": 0}

        @app.agent(source)
        async def count(stream: Stream) -> None:
            async for event in stream:
                counts[event.key] += 1
                processed["events"] += 1

        return app, processed

    app, processed = counting_app()
    changelog = app.tables["counts"].changelog

    def second_half_done() -> bool:
        # The second half is fed once the first is processed: committed in later
        # transactions than the first, held.
        if processed["events"] == events // 2 and not fed_second:
            fed_second.append(True)
            feed(events // 2)
        return processed["events"] >= events

    fed_second: list[bool] = []
    asyncio.run(run_until(app, second_half_done))

    ends = end_offsets(kafka_bootstrap, changelog, partitions)
    stored: Counter[str] = Counter()
    for partition in range(partitions):
        store = PartitionStore(partition_path(tmp_path, app_id, "counts", partition))
        try:
            assert store.meta_offset(CHANGELOG_OFFSET) == ends[partition]
            stored.update({key.decode(): int(value) for key, value in store.items()})
        finally:
            store.close()
    assert stored == Counter(f"k{i % keys}" for i in range(events))

    produce(kafka_bootstrap, src, [(b"k1", b"1")])
    app2, processed2 = counting_app()
    worker = asyncio.run(run_until(app2, lambda: processed2["events"] >= 1))
    assert processed2["events"] == 1  # the rest was committed
    assert worker._tables.restored_records == 0
