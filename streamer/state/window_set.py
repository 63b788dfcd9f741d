"""The windows of one key of a windowed table, as ``windowed[key]`` returns them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamer.clock import to_millis
from streamer.state.window_kinds import WindowView, stored_windows
from streamer.state.window_store import CLOSED_FLAG


class WindowSet:
    """The windows of one key, as ``windowed[key]`` returns them (inside an agent, relative
    to the event in progress). In-place operators update every open window containing the
    event time: ``t[k] += 1``, ``-=``, ``*=``, ``/=``, ``|=``; :meth:`update` takes any
    function. Reads return fresh values (the mutation rule of tables holds)."""

    __slots__ = ("key", "table")

    def __init__(self, table: WindowView, key: Any) -> None:
        self.table = table
        self.key = key

    def __repr__(self) -> str:
        return f"WindowSet({self.table.name!r}, {self.key!r})"

    def current(self) -> Any:
        """The latest window containing the event time (the wall clock outside any event);
        the table's default (or None) when it has no value. Sliding windows: the window
        ending at the event time; sessions: the session containing it."""
        return self.at_ms(self.table._now_ms())

    def at(self, ts: float) -> Any:
        """The latest window containing epoch seconds ``ts`` (sliding: the one ending at
        ``ts``; sessions: the one containing it); default (or None) if none."""
        return self.at_ms(to_millis(ts))

    def at_ms(self, t: int) -> Any:
        table = self.table
        if table.kind == "hopping":
            return table._value(table._read_window(self.key, table.spec.last_start(t)))
        return table._value(self._containing(t))

    def _stored(self) -> list[tuple[int, int, bytes]]:
        return stored_windows(self.table, self.table.table._key(self.key))

    def _containing(self, t: int) -> bytes | None:
        """Sliding windows and sessions: the stored window for time ``t`` (see :meth:`at`)."""
        for start, end, stored in reversed(self._stored()):
            if end == t if self.table.kind == "sliding" else start <= t <= end:
                return stored
        return None

    def range(self, start: float, end: float) -> list[tuple[float, Any]]:
        """``[(window start, value)]`` of the stored windows overlapping ``[start, end)``
        (epoch seconds), in time order; windows without a value are left out."""
        table, result = self.table, []
        if table.kind != "hopping":  # sliding windows and sessions: ends are included
            a, b = to_millis(start), to_millis(end)
            return [(s / 1000, table._decode(v)) for s, e, v in self._stored() if s < b and e >= a]
        for first in table.spec.overlapping(to_millis(start), to_millis(end)):
            stored = table._read_window(self.key, first)
            if stored is not None:
                result.append((first / 1000, table._decode(stored)))
        return result

    def is_closed(self, ts: float) -> bool:
        """Whether the latest window containing ``ts`` (see :meth:`at`) has been closed."""
        table = self.table
        if table.kind != "hopping":
            stored = self._containing(to_millis(ts))
        else:
            stored = table._read_window(self.key, table.spec.last_start(to_millis(ts)))
        return stored is not None and stored[:1] == CLOSED_FLAG

    def update(self, fn: Callable[[Any], Any]) -> WindowSet:
        """Set every open window containing the event time to ``fn(its value)``."""
        self.table._update(self.key, fn)
        return self

    def __iadd__(self, other: Any) -> WindowSet:
        return self.update(lambda value: value + other)

    def __isub__(self, other: Any) -> WindowSet:
        return self.update(lambda value: value - other)

    def __imul__(self, other: Any) -> WindowSet:
        return self.update(lambda value: value * other)

    def __itruediv__(self, other: Any) -> WindowSet:
        return self.update(lambda value: value / other)

    def __ior__(self, other: Any) -> WindowSet:
        return self.update(lambda value: value | other)
