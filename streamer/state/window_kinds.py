"""Writing windows of each kind (and reading sliding windows and sessions) through a
:class:`WindowedTable`.

The window arithmetic lives in :mod:`streamer.state.sliding` and
:mod:`streamer.state.sessions`; this module stages what it decides with the event in
progress (values, tombstones of merged-away sessions, ``stream_to`` updates), exactly as
tumbling and hopping windows do in :mod:`streamer.state.windows`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from streamer._context import Stager
from streamer.errors import SerializationError, StreamerError
from streamer.state.keyed import KeyedTable, TablePartition
from streamer.state.sessions import SessionPartition
from streamer.state.sessions import pack as pack_session
from streamer.state.sliding import SlidingPartition
from streamer.state.sliding import pack as pack_sliding
from streamer.state.window_store import OPEN_FLAG, WindowPartition, WindowSpec, window_key


class WindowView(Protocol):
    """What the functions here and :class:`~streamer.state.window_set.WindowSet` use of a
    :class:`~streamer.state.windows.WindowedTable` (which is the one implementation). A
    protocol so these modules sit below ``windows`` instead of importing it back."""

    kind: str
    spec: WindowSpec
    table: KeyedTable[Any, Any]
    merge: Callable[[Any, Any], Any]
    _updates: list[Any]  # the topics stream_to() sends every update to

    @property
    def name(self) -> str: ...
    def window_end(self, start: int, stored: bytes) -> int: ...
    def _decode(self, stored: bytes) -> Any: ...
    def _value(self, stored: bytes | None) -> Any: ...
    def _now_ms(self) -> int: ...
    def _read_window(self, key: Any, start: int) -> bytes | None: ...
    def _state(self, part: TablePartition) -> WindowPartition: ...
    def _update(self, key: Any, fn: Callable[[Any], Any], *, read: bool = True) -> None: ...
    def _emit(
        self, stager: Stager, topics: list[Any], key: Any, start: float, end: float, value: Any
    ) -> None: ...


PARTITION_KINDS: dict[str, type[WindowPartition]] = {
    "sliding": SlidingPartition,
    "session": SessionPartition,
}


def _initial(table: WindowView, key: Any, read: bool) -> Callable[[], Any]:
    def initial() -> Any:
        default = table.table.default
        if read and default is None:
            raise KeyError(key)
        return default() if read and default is not None else None

    return initial


def _encode(table: WindowView, value: Any) -> bytes:
    encoded = table.table.value_serde.serialize(value)
    if encoded is None:
        raise SerializationError(f"windowed table {table.name!r}: a value cannot be None")
    return encoded


def apply_grid(
    table: WindowView,
    state: WindowPartition,
    lane: Stager,
    key: Any,
    data: bytes,
    t: int,
    fn: Callable[[Any], Any],
    read: bool,
) -> bool:
    """Tumbling and hopping windows: apply ``fn`` to every open window containing ``t``;
    returns whether any was (else the event is late)."""
    part, spec, initial = state.part, table.spec, _initial(table, key, read)
    limit = spec.late_before(state.stream)
    applied = False
    for start in spec.starts(t) if t >= 0 else ():
        if start <= limit:
            break  # this window and every older one are past their grace
        window = window_key(start, data)
        stored = part.read(window)
        if stored is None:
            old = initial()
            state.add_open(start, data)
        elif stored[:1] != OPEN_FLAG:
            continue  # closed already (by an idle tick): it never changes again
        else:
            old = table._decode(stored) if read else None
        new = fn(old)
        lane.stage_write(part.stage(window, OPEN_FLAG + _encode(table, new)))
        applied = True
        if table._updates:
            table._emit(lane, table._updates, key, start / 1000, (start + spec.size) / 1000, new)
    return applied


def apply_sliding(
    table: WindowView,
    state: SlidingPartition,
    lane: Stager,
    key: Any,
    data: bytes,
    t: int,
    fn: Callable[[Any], Any],
    read: bool,
) -> bool:
    """An event at ``t``: update (and create) its sliding windows; False when it is late
    (its own window ``[t - size, t]`` is closed, or starts before the epoch)."""
    size = state.size
    if t - size < 0 or t - size <= table.spec.late_before(state.stream):
        return False
    decode = table.table.value_serde.deserialize
    changes = state.plan(data, t, fn, _initial(table, key, read), decode)
    part = state.part
    for start, value, last, new in changes:
        encoded = _encode(table, value)
        stored = pack_sliding(OPEN_FLAG, last, encoded)
        lane.stage_write(part.stage(window_key(start, data), stored))
        if new:
            state.add_open(start, data)
        if table._updates:
            table._emit(lane, table._updates, key, start / 1000, (start + size) / 1000, value)
    state.note(data, t)
    return True


def apply_session(
    table: WindowView,
    state: SessionPartition,
    lane: Stager,
    key: Any,
    data: bytes,
    t: int,
    fn: Callable[[Any], Any],
    read: bool,
) -> bool:
    """An event at ``t``: join, start or merge the key's sessions; False when it is late."""
    if t < 0:
        return False
    decode = table.table.value_serde.deserialize

    def merge(a: Any, b: Any) -> Any:
        try:
            return table.merge(a, b)
        except Exception as exc:
            raise StreamerError(
                f"session table {table.name!r}: merging two sessions of key {key!r} failed "
                f"({type(exc).__name__}: {exc}); pass merge=... to .session() for values "
                "that `a + b` does not combine"
            ) from exc

    plan = state.plan(data, t, fn, _initial(table, key, read), merge, decode)
    if plan is None:
        return False
    (start, end, kept), value, gone = plan
    part = state.part
    for old_start, old_end, _ in gone:
        # Merged into the new session: deleted in this event (a changelog tombstone).
        lane.stage_write(part.stage(window_key(old_start, data), None))
        state.unsure.append((data, old_start))
        if table._updates:
            table._emit(lane, table._updates, key, old_start / 1000, old_end / 1000, None)
    encoded = _encode(table, value)
    lane.stage_write(part.stage(window_key(start, data), pack_session(OPEN_FLAG, end, encoded)))
    state.note(data, start)
    if not kept:
        state.add_open(start, data, end)
        state.unsure.append((data, start))
    if table._updates:
        table._emit(lane, table._updates, key, start / 1000, end / 1000, value)
    return True


def stored_windows(table: WindowView, data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start ms, end ms, stored value)`` of one key's sliding windows or sessions, in
    start order, from the partition of the event in progress (outside events: every
    partition this worker owns)."""
    part, _ = table.table._here()
    parts = [part] if part is not None else list(table.table.owned.values())
    found: list[tuple[int, int, bytes]] = []
    for candidate in parts:
        state = table._state(candidate)
        if isinstance(state, SessionPartition):
            found.extend(state.sessions_of(data))
        elif isinstance(state, SlidingPartition):
            found.extend(
                (start, table.window_end(start, stored), stored)
                for start, stored in state.windows_of(data)
            )
    found.sort(key=lambda window: window[0])
    return found
