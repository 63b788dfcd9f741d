"""When a checkpoint writes RocksDB: after every commit at-least-once; at most once a second
under exactly-once, the changelog having the writes meanwhile and the overlay serving them
(real RocksDB through rocksdict)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer import App
from streamer.kafka.memory import MemoryBackend, MemoryBroker
from streamer.serde import IntSerde, StrSerde
from streamer.state.keyed import KeyedTable, TablePartition
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore
from streamer.worker import checkpoint
from streamer.worker.checkpoint import STORE_WRITE_INTERVAL, Checkpoint
from streamer.worker.tables import TableManager, _Holding


@pytest.fixture
def part(tmp_path: Path) -> Iterator[TablePartition]:
    table: KeyedTable[str, int] = KeyedTable(
        "counts",
        changelog="app-counts-changelog",
        default=int,
        key_serde=StrSerde(),
        value_serde=IntSerde(),
        partitions=1,
    )
    store = PartitionStore(tmp_path / "db")
    made = TablePartition(table, 0, store)
    yield made
    store.close()


def _commit(part: TablePartition, writes: dict[bytes, bytes], *, every: float) -> None:
    """Stage and release ``writes`` as completed events do, then commit them as a
    transaction (one marker per changelog partition) would."""
    for key, value in writes.items():
        write = part.stage(key, value)
        write.release()
    taken, part.dirty = part.dirty, {}
    Checkpoint._apply_tables([(part, taken)], 1, {0: 100}, every=every)


def _on_disk(part: TablePartition, key: bytes) -> object:
    return part.store._db.get(key)  # RocksDB itself, not the read cache


def test_exactly_once_writes_rocksdb_at_most_once_per_interval(part: TablePartition) -> None:
    _commit(part, {b"a": b"1"}, every=STORE_WRITE_INTERVAL)  # the first: written at once
    assert _on_disk(part, b"a") == b"1"
    assert part.store.meta_offset(CHANGELOG_OFFSET) == 2  # one record and one marker

    _commit(part, {b"a": b"2", b"b": b"1"}, every=STORE_WRITE_INTERVAL)
    _commit(part, {b"a": b"3"}, every=STORE_WRITE_INTERVAL)
    # Committed to the changelog, not yet in RocksDB: reads see them, the stored offset
    # still says where the store's own contents end.
    assert _on_disk(part, b"a") == b"1" and _on_disk(part, b"b") is None
    assert part.read(b"a") == b"3" and part.read(b"b") == b"1"
    assert part.store.meta_offset(CHANGELOG_OFFSET) == 2
    assert part.changelog_end == 7

    part.persist(time.monotonic())
    assert _on_disk(part, b"a") == b"3" and _on_disk(part, b"b") == b"1"
    assert part.store.meta_offset(CHANGELOG_OFFSET) == 7
    assert part.overlay == {}  # nothing pending: the store serves them now
    assert part.read(b"a") == b"3"


def test_a_commit_after_the_interval_writes_everything_held(part: TablePartition) -> None:
    _commit(part, {b"a": b"1"}, every=STORE_WRITE_INTERVAL)
    _commit(part, {b"b": b"1"}, every=STORE_WRITE_INTERVAL)
    assert _on_disk(part, b"b") is None
    part.applied_at -= STORE_WRITE_INTERVAL  # as if the interval had passed
    _commit(part, {b"c": b"1"}, every=STORE_WRITE_INTERVAL)
    assert [_on_disk(part, k) for k in (b"a", b"b", b"c")] == [b"1", b"1", b"1"]
    assert part.store.meta_offset(CHANGELOG_OFFSET) == 6
    assert part.unapplied == {}


def test_many_held_keys_are_written_before_the_interval(
    part: TablePartition, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "UNAPPLIED_MAX", 3)
    _commit(part, {b"a": b"1"}, every=STORE_WRITE_INTERVAL)
    _commit(part, {b"b": b"1", b"c": b"1"}, every=STORE_WRITE_INTERVAL)
    assert _on_disk(part, b"c") is None
    _commit(part, {b"d": b"1"}, every=STORE_WRITE_INTERVAL)  # three held: written
    assert _on_disk(part, b"d") == b"1"


def test_a_key_written_again_keeps_its_overlay_entry(part: TablePartition) -> None:
    """A key released again after the commit (in ``dirty``) keeps the newer value in the
    overlay when the held writes reach RocksDB."""
    _commit(part, {b"a": b"1"}, every=STORE_WRITE_INTERVAL)
    _commit(part, {b"a": b"2"}, every=STORE_WRITE_INTERVAL)
    part.stage(b"a", b"3").release()  # the next checkpoint's
    part.persist(time.monotonic())
    assert _on_disk(part, b"a") == b"2"
    assert part.read(b"a") == b"3"


def test_at_least_once_writes_rocksdb_after_every_commit(part: TablePartition) -> None:
    for value in (b"1", b"2", b"3"):
        _commit(part, {b"a": value}, every=0.0)
        assert _on_disk(part, b"a") == value
    assert part.unapplied == {}


def test_closing_a_partition_writes_what_it_holds(tmp_path: Path) -> None:
    manager, holding, part = _held_partition(tmp_path)
    manager._close(holding, give_back=False)
    reopened = PartitionStore(tmp_path / "db")
    try:
        assert reopened.get(b"a") == b"2"
        assert reopened.meta_offset(CHANGELOG_OFFSET) == 4
    finally:
        reopened.close()
    assert 0 not in part.table.owned


def test_a_failed_write_at_close_is_said_and_the_partition_still_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The changelog has the held writes: failing to write them locally costs a longer
    restore, never the release of the partition."""
    manager, holding, part = _held_partition(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(PartitionStore, "apply", broken)
    with caplog.at_level(logging.WARNING, logger="streamer.tables"):
        manager._close(holding, give_back=False)
    assert "counts[0]: writing its last committed changes to local state failed" in caplog.text
    assert "No space left on device" in caplog.text
    monkeypatch.undo()
    reopened = PartitionStore(tmp_path / "db")  # closed: RocksDB's lock was released
    try:
        assert reopened.get(b"a") == b"1"  # the first commit's; the rest is in the changelog
    finally:
        reopened.close()
    assert 0 not in part.table.owned


def _held_partition(tmp_path: Path) -> tuple[TableManager, _Holding, TablePartition]:
    """A table partition of a worker's table manager holding one committed write that
    RocksDB does not have yet."""
    app = App("store-writes", brokers="127.0.0.1:1")
    table = app.table("counts", default=int, value_type=int)
    part = TablePartition(table, 0, PartitionStore(tmp_path / "db"))
    table.attach(part)
    _commit(part, {b"a": b"1"}, every=STORE_WRITE_INTERVAL)
    _commit(part, {b"a": b"2"}, every=STORE_WRITE_INTERVAL)
    assert part.unapplied
    manager = TableManager(app, {}, MemoryBackend(MemoryBroker("store-writes")), state_dir=tmp_path)
    holding = _Holding(0)
    holding.parts.append(part)
    return manager, holding, part
