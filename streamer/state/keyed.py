"""The dict-like core of every table: one partition's overlay over its store, and the keyed
surface agents read and write. Windowed tables (:mod:`streamer.state.windows`) build on this
core; :class:`streamer.state.table.Table` adds the methods that turn a table into windows.

The mutation rule: a read returns a fresh value decoded from bytes, never a shared object.
Changing it in place changes nothing until it is written back: ``t[k] += 1``,
``v = t[k]; v.append(x); t[k] = v`` and ``model.field = 1; t[k] = model`` are all correct;
``t[k].append(x)`` alone is not (the change is never stored).

Writes made while processing an event are staged with that event (DESIGN §2 rule 2): they
are visible at once to reads on this worker (read-your-writes), join the checkpoint when the
event and every earlier offset of the partition are complete, and are undone when the agent
fails on that event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from streamer._context import TableWrite, current_lane
from streamer.errors import SerializationError, StreamerError
from streamer.serde import Serde
from streamer.state.store import CHANGELOG_OFFSET, SOURCE_OFFSET

if TYPE_CHECKING:
    from streamer.state.store import PartitionStore

K = TypeVar("K")
V = TypeVar("V")


_NO_KEY = object()
_new_write: Callable[[type[TableWrite], tuple[Any, ...]], TableWrite] = tuple.__new__
_IMMUTABLE = frozenset({str, int, bytes})


class TablePartition:
    """One partition of a table on this worker: its store, and writes not yet in it.

    ``overlay`` maps key -> [latest value (None = deleted), writes not yet released]; it
    serves read-your-writes. ``dirty`` holds released writes awaiting the next checkpoint.
    ``changelog_end`` is the changelog offset after our last write: recovery resumes there.
    ``unapplied`` holds writes the changelog has durably (committed) that RocksDB does not
    have yet, and ``source_offset`` the source offset their last commit reached: under
    exactly-once a checkpoint commits every 0.1 s, and writing RocksDB as often cost more
    than the changelog (see :meth:`persist`). The overlay keeps serving them until then.
    """

    __slots__ = (
        "applied_at",
        "changelog_end",
        "dirty",
        "overlay",
        "partition",
        "source_offset",
        "store",
        "table",
        "unapplied",
    )

    def __init__(self, table: KeyedTable[Any, Any], partition: int, store: PartitionStore) -> None:
        self.table = table
        self.partition = partition
        self.store = store
        self.overlay: dict[bytes, list[Any]] = {}
        self.dirty: dict[bytes, bytes | None] = {}
        self.changelog_end = 0
        self.unapplied: dict[bytes, bytes | None] = {}
        self.source_offset: int | None = None
        self.applied_at = 0.0  # time.monotonic() of the last persist()

    @property
    def label(self) -> str:
        return f"{self.table.name}[{self.partition}]"

    def read(self, key: bytes) -> bytes | None:
        """The value of ``key`` (None when absent or deleted)."""
        entry = self.overlay.get(key)
        if entry is not None:
            value: bytes | None = entry[0]
            return value
        return self.store.get(key)

    def stage(self, key: bytes, value: bytes | None) -> TableWrite:
        # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function, and this
        # runs once per table write.
        entry = self.overlay.get(key)
        if entry is None:
            self.overlay[key] = [value, 1]
            return _new_write(TableWrite, (self, key, value, False, None))
        previous = entry[0]
        entry[0] = value
        entry[1] += 1
        return _new_write(TableWrite, (self, key, value, True, previous))

    def release(self, key: bytes, value: bytes | None) -> None:
        self.dirty[key] = value
        self.overlay[key][1] -= 1

    def undo(self, key: bytes, had_entry: bool, previous: bytes | None) -> None:
        entry = self.overlay[key]
        entry[1] -= 1
        if had_entry:
            entry[0] = previous
        elif entry[1] == 0:
            del self.overlay[key]

    def pending(self, key: bytes) -> int:
        """How many writes to ``key`` events in flight hold (staged, not yet released)."""
        entry = self.overlay.get(key)
        return 0 if entry is None else int(entry[1])

    def write_now(self, key: bytes, value: bytes | None) -> bool:
        """Write ``key`` outside any event (windowed tables' ticks): released at once into
        ``dirty``, so the next checkpoint persists it (in its transaction under exactly-once).

        Refused (returns False) while an event in flight holds a write to ``key``: that
        event's release would overwrite this value with an older one.
        """
        if self.pending(key):
            return False
        self.stage(key, value)
        self.release(key, value)
        return True

    def persist(self, now: float) -> None:
        """Write :attr:`unapplied` to RocksDB in one batch with the offsets to resume from
        (``changelog_end``, and ``source_offset`` when known); a no-op when there is
        nothing. Local state may lag the changelog (recovery reads the rest from the
        changelog, from the stored offset) but never run ahead of it: only committed writes
        are ever unapplied. Call it with no commit in flight: the overlay entries it drops
        must not hold a value a commit has taken and not yet confirmed."""
        self.applied_at = now
        if not self.unapplied:
            return
        written, self.unapplied = self.unapplied, {}
        meta = {CHANGELOG_OFFSET: self.changelog_end}
        if self.source_offset is not None:
            meta[SOURCE_OFFSET] = self.source_offset
            self.source_offset = None
        self.store.apply(written, meta, remember=True)
        self.checkpointed(written)

    def checkpointed(self, written: dict[bytes, bytes | None]) -> None:
        """``written`` reached RocksDB: overlay entries with nothing pending can go. A key
        written again since the checkpoint began (in ``dirty``: a commit that ran while
        events went on) keeps its entry: it holds a value newer than the store's."""
        overlay, dirty = self.overlay, self.dirty
        for key in written:
            entry = overlay.get(key)
            if entry is not None and entry[1] == 0 and key not in dirty:
                del overlay[key]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, value), the overlay's view over the store's."""
        overlay = self.overlay
        for key, value in self.store.items():
            if key not in overlay:
                yield key, value
        for key, entry in list(overlay.items()):
            if entry[0] is not None:
                yield key, entry[0]


class KeyedTable(Generic[K, V]):
    """The keyed core of a table (see :class:`streamer.state.table.Table`, which users get).

    Inside an agent, a key is looked up in the partition of the event being processed: keep
    table keys co-partitioned with the stream (the event's key, or a re-keyed stream).
    Outside agents (tests, tools) reads search this worker's partitions; writes are refused.
    """

    def __init__(
        self,
        name: str,
        *,
        changelog: str,
        default: Callable[[], V] | None,
        key_serde: Serde,
        value_serde: Serde,
        partitions: int | None,
    ) -> None:
        self.name = name
        self.changelog = changelog
        self.default = default
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitions = partitions
        self._owned: dict[int, TablePartition] = {}
        # The topic it is built from (app.table_from; see versioned.py), None for a table
        # agents write.
        self.source_topic: str | None = None
        # The last key encoded, and its bytes: ``t[k] += 1; yield k, t[k]`` encodes the
        # same key three times. Only immutable keys are kept, so identity means equality.
        self._last_key: object = _NO_KEY
        self._last_data = b""
        # Set when the table is made windowed: its keys are then windows (see windows.py),
        # which plain writes must not forge.
        self.holds_windows = False

    def __repr__(self) -> str:
        return f"Table({self.name!r}, changelog={self.changelog!r})"

    # -- worker side -------------------------------------------------------------------------

    def attach(self, part: TablePartition) -> None:
        self._owned[part.partition] = part

    def detach(self, partition: int) -> TablePartition | None:
        return self._owned.pop(partition, None)

    @property
    def owned(self) -> dict[int, TablePartition]:
        return self._owned

    # -- encoding ----------------------------------------------------------------------------

    def _key(self, key: K) -> bytes:
        if key is self._last_key:
            return self._last_data
        try:
            data = self.key_serde.serialize(key)
        except SerializationError as exc:
            raise SerializationError(f"table {self.name!r}: key {exc}") from exc
        if data is None:
            raise SerializationError(f"table {self.name!r}: key must not be None")
        if type(key) in _IMMUTABLE:
            self._last_key, self._last_data = key, data
        return data

    def _decode(self, data: bytes) -> V:
        value: V = self.value_serde.deserialize(data)
        return value

    # -- lookup ------------------------------------------------------------------------------

    def _here(self) -> tuple[TablePartition | None, Any]:
        # (partition, lane): both None outside any event; the lane is a Stager otherwise.
        lane = current_lane.get()
        if lane is None or lane.partition < 0:  # outside any event
            return None, None
        part = self._owned.get(lane.partition)
        if part is None:
            raise StreamerError(
                f"table {self.name!r} has no partition {lane.partition} on this worker"
            )
        return part, lane

    def _read(self, key: K) -> bytes | None:
        # The hot path (an agent reading its event's partition) with _key(), _here() and
        # TablePartition.read() inlined: it runs once or twice per event of a stateful agent.
        data = self._last_data if key is self._last_key else self._key(key)
        lane = current_lane.get()
        if lane is not None and lane.partition >= 0:
            part = self._owned.get(lane.partition)
            if part is not None:
                entry = part.overlay.get(data)
                if entry is not None:
                    value: bytes | None = entry[0]
                    return value
                return part.store.get(data)
        part, _ = self._here()  # outside any event, or a partition not here (raises)
        if part is not None:
            return part.read(data)
        for candidate in self._owned.values():
            value = candidate.read(data)
            if value is not None:
                return value
        return None

    def __getitem__(self, key: K) -> V:
        data = self._read(key)
        if data is None:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        value: V = self.value_serde.deserialize(data)  # _decode() inlined
        return value

    def get(self, key: K, default: V | None = None) -> V | None:
        data = self._read(key)
        return default if data is None else self._decode(data)

    def __contains__(self, key: Any) -> bool:
        return self._read(key) is not None

    def __setitem__(self, key: K, value: V) -> None:
        if value is None:
            raise SerializationError(f"table {self.name!r}: use `del table[key]`, not None")
        try:
            encoded = self.value_serde.serialize(value)
        except SerializationError as exc:
            raise SerializationError(f"table {self.name!r}: value {exc}") from exc
        self._write(key, encoded)

    def __delitem__(self, key: K) -> None:
        if self._read(key) is None:
            raise KeyError(key)
        self._write(key, None)

    def _write(self, key: K, value: bytes | None) -> None:
        if self.holds_windows:  # a plain key in a windowed store would pass for a window
            raise StreamerError(
                f"table {self.name!r} holds windows: write through the table that "
                "tumbling()/hopping()/sliding()/session() returned"
            )
        data = self._last_data if key is self._last_key else self._key(key)
        lane: Any = current_lane.get()
        part = self._owned.get(lane.partition) if lane is not None else None  # _here() inlined
        if part is None:
            part, lane = self._here()  # says why: outside any event, or not this partition
        if part is None:
            raise StreamerError(
                f"table {self.name!r} is written outside an agent; tables change only while "
                "an agent processes an event (so the change commits with that event)"
            )
        lane.stage_write(part.stage(data, value))

    def items(self) -> Iterator[tuple[K, V]]:
        """All (key, value) of the partitions this worker owns."""
        for part in list(self._owned.values()):
            for key, value in part.items():
                yield self.key_serde.deserialize(key), self._decode(value)

    def keys(self) -> Iterator[K]:
        return (key for key, _ in self.items())

    def values(self) -> Iterator[V]:
        return (value for _, value in self.items())

    def as_dict(self) -> dict[K, V]:
        return dict(self.items())

    def tick(self, now: float) -> None:
        """Called by the worker about once a second with the wall-clock time (epoch
        seconds), outside any event; plain tables have nothing to do."""
