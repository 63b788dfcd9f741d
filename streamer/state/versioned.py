"""A table built from a topic (``app.table_from``), read as of each event's time: the state
behind stream-table joins.

Kafka Streams' stream-table join looks the stream record up in the table *as it stands at
the record's position* in the merged, timestamp-ordered input of both topics; with a
versioned store it looks up the version valid at the record's timestamp. Streamer does the
latter, which does not depend on how the two topics' fetches interleave:

- every record of the table's topic adds a *version* (its timestamp, its value; a tombstone
  is a version too: the key is absent from then on) to its key;
- inside an agent, ``table[key]`` returns the newest version whose timestamp is not after
  the timestamp of the event being processed; outside agents, the newest version.

A table's records are applied when they are dispatched, in offset order, not by an agent
instance running later (``streamer.worker.inline``), and the worker hands records of the
co-partitioned topics out lowest timestamp first (``streamer.worker.ordering``): by the
time an event is processed, every record of the table's partition with an earlier timestamp
has been applied, unless it arrives later than ``event_order_wait`` allows.

Versions older than ``history`` seconds behind the key's newest are dropped (the newest of
them is kept, as it is still in effect at the cutoff). Layout of a key's value in RocksDB
and the changelog: versions in timestamp order, each ``>qI`` (timestamp ms, length; length
``0xFFFFFFFF`` = tombstone) followed by the encoded value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from streamer._context import TableWrite, current_event, current_lane
from streamer.errors import StreamerError
from streamer.serde import Serde
from streamer.state.keyed import TablePartition
from streamer.state.table import Table

_HEAD = struct.Struct(">qI")
_TOMBSTONE = 0xFFFFFFFF
Version = tuple[int, bytes | None]  # (timestamp ms, encoded value; None: deleted)


def unpack(data: bytes | None) -> list[Version]:
    """The versions stored in ``data``, oldest first."""
    versions: list[Version] = []
    if not data:
        return versions
    at = 0
    while at < len(data):
        ts, size = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        if size == _TOMBSTONE:
            versions.append((ts, None))
        else:
            versions.append((ts, data[at : at + size]))
            at += size
    return versions


def pack(versions: list[Version]) -> bytes:
    out = bytearray()
    for ts, value in versions:
        if value is None:
            out += _HEAD.pack(ts, _TOMBSTONE)
        else:
            out += _HEAD.pack(ts, len(value)) + value
    return bytes(out)


def as_of(versions: list[Version], ts: int | None) -> bytes | None:
    """The value in effect at ``ts`` (the newest when ``ts`` is None)."""
    for version_ts, value in reversed(versions):
        if ts is None or version_ts <= ts:
            return value
    return None


def add_version(versions: list[Version], ts: int, value: bytes | None, history_ms: int) -> bool:
    """Insert ``(ts, value)`` in timestamp order (replacing a version of the same timestamp:
    the later offset wins) and drop versions no longer reachable. Returns False, changing
    nothing, when ``ts`` is older than the history kept (the record is too late)."""
    newest = versions[-1][0] if versions else ts
    cutoff = max(newest, ts) - history_ms
    if ts < cutoff:
        return False
    index = len(versions)
    while index > 0 and versions[index - 1][0] > ts:
        index -= 1
    if index > 0 and versions[index - 1][0] == ts:
        versions[index - 1] = (ts, value)
    else:
        versions.insert(index, (ts, value))
    # Keep the newest version at or before the cutoff: it is the one in effect there.
    first = 0
    while first + 1 < len(versions) and versions[first + 1][0] <= cutoff:
        first += 1
    del versions[:first]
    return True


class VersionedTable(Table[Any, Any]):
    """A table whose content is the topic it is built from (``app.table_from(topic)``),
    partitioned like it, read as of the time of the event being processed (see the module
    docstring). Read-only for agents: it changes only with its topic."""

    def __init__(
        self,
        name: str,
        *,
        changelog: str,
        source_topic: str,
        key_serde: Serde,
        value_serde: Serde,
        history: float,
    ) -> None:
        super().__init__(
            name,
            changelog=changelog,
            default=None,
            key_serde=key_serde,
            value_serde=value_serde,
            partitions=None,
        )
        self.source_topic = source_topic
        self.history_ms = int(history * 1000)
        self.too_late = 0  # records older than the history kept (dropped)

    def __repr__(self) -> str:
        return f"VersionedTable({self.name!r}, from {self.source_topic!r})"

    def _read(self, key: Any) -> bytes | None:
        data = self._key(key)
        part, _ = self._here()
        if part is not None:
            return as_of(unpack(part.read(data)), _event_time())
        for candidate in self._owned.values():
            value = as_of(unpack(candidate.read(data)), None)
            if value is not None:
                return value
        return None

    def _write(self, key: Any, value: bytes | None) -> None:
        raise StreamerError(
            f"table {self.name!r} is built from topic {self.source_topic!r}: it changes only "
            "with that topic (send to it instead)"
        )

    def put_version(
        self, part: TablePartition, key: bytes, value: bytes | None, ts: int
    ) -> TableWrite | None:
        """Stage the version ``(ts, value)`` of ``key`` in ``part`` (None: too late, dropped)."""
        versions = unpack(part.read(key))
        if not add_version(versions, ts, value, self.history_ms):
            self.too_late += 1
            return None
        return part.stage(key, pack(versions))

    def items(self) -> Iterator[tuple[Any, Any]]:
        """The newest value of every key present on this worker's partitions."""
        for part in list(self._owned.values()):
            for key, packed in part.items():
                value = as_of(unpack(packed), None)
                if value is not None:
                    yield self.key_serde.deserialize(key), self._decode(value)

    def versions(self, key: Any) -> list[tuple[int, Any]]:
        """Every version of ``key`` kept (timestamp ms, value; None = deleted), oldest first."""
        data = self._key(key)
        part, _ = self._here()
        parts = [part] if part is not None else list(self._owned.values())
        for candidate in parts:
            found = unpack(candidate.read(data))
            if found:
                return [(ts, None if v is None else self._decode(v)) for ts, v in found]
        return []


def _event_time() -> int | None:
    """The timestamp of the event being processed (in a take() batch, of the event the
    batch loop is at); None outside events."""
    current = getattr(current_lane.get(), "current", None)
    if not current:
        return None
    focus = current_event.get()
    if focus is not None and any(pending.event is focus for pending in current):
        return int(focus.timestamp)
    return int(current[-1].event.timestamp)
