"""PartitionStore: one RocksDB (rocksdict) database per table partition.

User keys and values live in the default column family as the table's serialized bytes;
checkpoint metadata (the changelog offset to resume recovery from, the source offset it
matches) lives in a ``meta`` column family, written in the *same* WriteBatch as the data, so
the two can never disagree after a crash (DESIGN §2 rule 5).

The key layout is the table's serialized key as is; windowed tables will prefix keys with
the window start, so range scans over a key's windows stay contiguous.

A store also keeps the values its checkpoints wrote last in memory (a bounded read cache):
a table partition drops a key's in-memory value once a checkpoint made it durable, and the
next event of that key would read it back from RocksDB. Every write to the data goes
through :meth:`PartitionStore.apply`, which refreshes or clears the cache, so a cached value
is always the one RocksDB holds.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch

log = logging.getLogger("streamer.state")

_META = "meta"
CHANGELOG_OFFSET = b"changelog_offset"
# The changelog topic's id (Kafka's topic UUID) the local state was built from: a topic
# deleted and created again under the same name (``offsets reset --reset-state``) has a new
# id, and offsets that happen to fall inside its range must not be trusted.
CHANGELOG_ID = b"changelog_id"
SOURCE_OFFSET = b"source_offset"

# Bytes of keys and values a store keeps cached (each entry counted with CACHE_ENTRY_COST
# more for the dict slot and the two bytes objects): with 10,000 counters over 4 partitions
# under exactly-once (a checkpoint every 0.1 s), the count scenario of ``python -m bench``
# read 85,000 keys from RocksDB per 400,000 events without it and 10,000 (the first reads)
# with it. 1 MiB per table partition bounds it whatever the values weigh.
CACHE_BYTES = 1 << 20
CACHE_ENTRY_COST = 100
_CACHE_ENTRIES_MAX = CACHE_BYTES // CACHE_ENTRY_COST  # no more entries than this can fit
_MISSING = object()


def _weight(key: bytes, value: bytes | None) -> int:
    """What one cache entry counts against CACHE_BYTES."""
    return CACHE_ENTRY_COST + len(key) + (len(value) if value is not None else 0)


def table_path(state_dir: str | Path, app_id: str, table: str) -> Path:
    """Where table ``table`` of app ``app_id`` keeps its partitions on this machine."""
    return Path(state_dir) / app_id / table


def global_table_path(state_dir: str | Path, app_id: str, table: str) -> Path:
    """Where global table ``table`` keeps its (every) partition on this machine: apart from
    the partitioned tables, under ``global/``."""
    return Path(state_dir) / app_id / "global" / table


def partition_path(state_dir: str | Path, app_id: str, table: str, partition: int) -> Path:
    """The one layout of local state: ``state_dir/<app id>/<table>/<partition>``, a RocksDB
    database per table partition (the worker, the ops tools and the CLI all go through
    here)."""
    return table_path(state_dir, app_id, table) / str(partition)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    return options


class PartitionStore:
    """A table partition's local RocksDB. Not thread-safe: one owner at a time (the worker's
    loop, or the recovery thread while the partition is not yet serving)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        self._db = Rdict(
            str(path), _options(), column_families={_META: _options()}, access_type=access
        )
        self._meta = self._db.get_column_family(_META)
        self._meta_handle = self._db.get_column_family_handle(_META)
        # key -> value (None: absent) as the last checkpoints wrote them, oldest first.
        self._cache: dict[bytes, bytes | None] = {}
        self._cached_bytes = 0

    @classmethod
    def open_or_rebuild(cls, path: Path) -> PartitionStore:
        """Open the store; when it is corrupt or unreadable, wipe it (with a warning) so that
        recovery rebuilds it from the changelog, instead of crashing the worker."""
        try:
            return cls(path)
        except Exception as exc:  # rocksdict raises plain Exception for corruption
            if "lock" in str(exc).lower():
                raise
            log.warning(
                "local state at %s is unreadable (%s); rebuilding it from the changelog", path, exc
            )
            shutil.rmtree(path, ignore_errors=True)
            return cls(path)

    def get(self, key: bytes) -> bytes | None:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self._db.get(key)
        return value  # type: ignore[return-value]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self._db.items()

    def meta_offset(self, name: bytes) -> int | None:
        raw = self._meta.get(name)
        return int(raw) if raw is not None else None

    def meta_text(self, name: bytes) -> str | None:
        raw = self._meta.get(name)
        return raw.decode() if raw is not None else None

    def set_meta_text(self, name: bytes, value: str) -> None:
        self._meta[name] = value.encode()

    def forget_offsets(self) -> None:
        """Drop the stored changelog and source offsets (the data they described is gone)."""
        for name in (CHANGELOG_OFFSET, SOURCE_OFFSET):
            if self._meta.get(name) is not None:
                del self._meta[name]

    def is_empty(self) -> bool:
        return next(iter(self._db.keys()), None) is None

    def apply(
        self,
        writes: Mapping[bytes, bytes | None],
        meta: Mapping[bytes, int],
        *,
        remember: bool = False,
    ) -> None:
        """Write ``writes`` (None deletes) and ``meta`` offsets atomically, in one WriteBatch.

        ``remember``: keep the written values in the read cache (a checkpoint's writes,
        which the same keys' next events are likely to read). Otherwise (a restore, a
        standby's or global table's catch-up, a wipe) the cache is emptied: those write
        many keys nobody reads yet, and the cache must not outlive a value it holds."""
        batch = WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for name, offset in meta.items():
            batch.put(name, str(offset).encode(), self._meta_handle)
        self._db.write(batch)
        if remember:
            self._remember(writes)
        elif self._cache:
            self._cache.clear()
            self._cached_bytes = 0

    def _remember(self, writes: Mapping[bytes, bytes | None]) -> None:
        """Cache ``writes`` as the newest entries, dropping the oldest past CACHE_BYTES."""
        cache = self._cache
        size = self._cached_bytes
        items: Iterable[tuple[bytes, bytes | None]] = writes.items()
        if len(writes) > _CACHE_ENTRIES_MAX:
            # More than the cache can hold (a checkpoint after a large backlog): only the
            # last writes could stay, so skip the rest instead of inserting and evicting them.
            cache.clear()
            size = 0
            items = islice(items, len(writes) - _CACHE_ENTRIES_MAX, None)
        for key, value in items:
            old = cache.pop(key, _MISSING)
            if old is not _MISSING:
                size -= _weight(key, old)  # type: ignore[arg-type]
            cache[key] = value  # at the end: the oldest entries go first
            size += _weight(key, value)
        while size > CACHE_BYTES and cache:
            key = next(iter(cache))
            size -= _weight(key, cache.pop(key))
        self._cached_bytes = size

    def approximate_keys(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        self._cache.clear()
        # Drop the column-family references first: RocksDB's lock is released only when
        # nothing refers to the database any more (else reopening hits "lock hold").
        del self._meta, self._meta_handle
        self._db.close()
        del self._db
