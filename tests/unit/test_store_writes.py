"""When a checkpoint writes RocksDB: after every commit at-least-once; at most once a second
under exactly-once, the changelog having the writes meanwhile and the overlay serving them
(real RocksDB through rocksdict)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.serde import IntSerde, StrSerde
from streamer.state.keyed import KeyedTable, TablePartition
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore
from streamer.worker import checkpoint
from streamer.worker.checkpoint import STORE_WRITE_INTERVAL, Checkpoint


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
