"""PartitionStore's read cache: what a checkpoint wrote is read back from memory, and a
cached value is always the one RocksDB holds (real RocksDB through rocksdict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.state import store as store_module
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore


class CountingDb:
    """Wraps the store's Rdict to count the point reads that reach RocksDB."""

    def __init__(self, db: object) -> None:
        self.db = db
        self.gets = 0

    def get(self, key: bytes) -> object:
        self.gets += 1
        return self.db.get(key)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = PartitionStore(tmp_path / "db")
    yield opened
    opened._db = getattr(opened._db, "db", opened._db)  # unwrap before closing
    opened.close()


def _count(store: PartitionStore) -> CountingDb:
    counting = CountingDb(store._db)
    store._db = counting  # type: ignore[assignment]
    return counting


def test_what_a_checkpoint_wrote_is_read_without_rocksdb(store: PartitionStore) -> None:
    store.apply({b"a": b"1", b"gone": None}, {CHANGELOG_OFFSET: 2}, remember=True)
    db = _count(store)
    assert store.get(b"a") == b"1"
    assert store.get(b"gone") is None  # a delete is remembered as absent
    assert db.gets == 0
    assert store.get(b"never-written") is None
    assert db.gets == 1


def test_a_write_that_is_not_remembered_empties_the_cache(store: PartitionStore) -> None:
    """A restore or a catch-up writes through apply() without remembering: nothing cached
    may outlive the value it holds."""
    store.apply({b"a": b"1"}, {}, remember=True)
    store.apply({b"a": b"2"}, {})
    db = _count(store)
    assert store.get(b"a") == b"2"
    assert db.gets == 1


def test_the_newest_value_wins_and_the_oldest_entries_go_past_the_bound(
    store: PartitionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for about three entries of a one-byte key and a one-byte value.
    monkeypatch.setattr(store_module, "CACHE_BYTES", 3 * (store_module.CACHE_ENTRY_COST + 2))
    store.apply({b"a": b"1", b"b": b"1", b"c": b"1"}, {}, remember=True)
    store.apply({b"a": b"2"}, {}, remember=True)  # rewritten: now the newest
    store.apply({b"d": b"1"}, {}, remember=True)  # b, the oldest, makes room
    db = _count(store)
    assert [store.get(k) for k in (b"a", b"c", b"d")] == [b"2", b"1", b"1"]
    assert db.gets == 0
    assert store.get(b"b") == b"1"  # still in RocksDB, read from there
    assert db.gets == 1
    assert store._cached_bytes <= store_module.CACHE_BYTES


def test_a_checkpoint_larger_than_the_cache_keeps_its_last_writes(store: PartitionStore) -> None:
    """A checkpoint after a large backlog writes more keys than the cache can hold: its last
    writes are the ones kept, and what the cache held before is dropped."""
    store.apply({b"old": b"1"}, {}, remember=True)
    many = {b"k%d" % i: b"v%d" % i for i in range(3 * store_module._CACHE_ENTRIES_MAX)}
    store.apply(many, {}, remember=True)
    assert len(store._cache) <= store_module._CACHE_ENTRIES_MAX
    assert b"old" not in store._cache
    last = b"k%d" % (len(many) - 1)
    assert store._cache[last] == many[last]
    assert store._cached_bytes <= store_module.CACHE_BYTES
    db = _count(store)
    assert store.get(b"k0") == b"v0"  # from RocksDB
    assert db.gets == 1
