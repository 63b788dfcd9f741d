"""Table: dict-like state, partitioned like the agent's source topic, backed by RocksDB and a
compacted changelog topic; what :meth:`App.table` returns.

The keyed surface and its contracts (the mutation rule, staged writes) are those of
:class:`streamer.state.keyed.KeyedTable`; this class adds the methods that make a table hold
windows (:mod:`streamer.state.windows`), kept here so the window modules build on the keyed
core without the core knowing them.
"""

from __future__ import annotations

from collections.abc import Callable

from streamer.errors import ConfigError
from streamer.events import Event
from streamer.state.keyed import K, KeyedTable, TablePartition, V
from streamer.state.sessions import session_spec
from streamer.state.sliding import sliding_spec
from streamer.state.window_store import WindowSpec
from streamer.state.windows import DAY, OnClose, OnLate, WindowedTable

__all__ = ["Table", "TablePartition"]


class Table(KeyedTable[K, V]):
    """A dict-like table. Create with :meth:`App.table`; annotate it ``Table[str, int]``.

    Inside an agent, a key is looked up in the partition of the event being processed: keep
    table keys co-partitioned with the stream (the event's key, or a re-keyed stream).
    Outside agents (tests, tools) reads search this worker's partitions; writes are refused.
    The mutation rule and staging: see :mod:`streamer.state.keyed`.
    """

    # The windowed view, once tumbling()/hopping()/sliding()/session() made one.
    windowed: WindowedTable[K, V] | None = None

    def tick(self, now: float) -> None:
        """Called by the worker about once a second with the wall-clock time (epoch
        seconds), outside any event. Windowed tables close windows of idle partitions here
        (never raising: errors are logged)."""
        if self.windowed is not None:
            self.windowed.tick(now)

    # -- windows -----------------------------------------------------------------------------

    def tumbling(
        self,
        size: float,
        *,
        grace: float = 0.0,
        retention: float | None = None,
        on_close: OnClose | None = None,
        on_late: OnLate | None = None,
        idle_close: float | None = 30.0,
        event_time: Callable[[Event], float] | None = None,
    ) -> WindowedTable[K, V]:
        """Make this table hold tumbling windows of ``size`` seconds; use the returned
        :class:`~streamer.state.windows.WindowedTable` (see there for every parameter)."""
        return self.hopping(
            size,
            size,
            grace=grace,
            retention=retention,
            on_close=on_close,
            on_late=on_late,
            idle_close=idle_close,
            event_time=event_time,
        )

    def hopping(
        self,
        size: float,
        step: float,
        *,
        grace: float = 0.0,
        retention: float | None = None,
        on_close: OnClose | None = None,
        on_late: OnLate | None = None,
        idle_close: float | None = 30.0,
        event_time: Callable[[Event], float] | None = None,
    ) -> WindowedTable[K, V]:
        """Make this table hold hopping windows of ``size`` seconds starting every
        ``step`` seconds; use the returned :class:`~streamer.state.windows.WindowedTable`."""
        spec = WindowSpec.of(size, step, grace, max(DAY, grace) if retention is None else retention)
        return self._windowed(spec, on_close, on_late, idle_close, event_time, None)

    def sliding(
        self,
        size: float,
        *,
        grace: float = 0.0,
        retention: float | None = None,
        on_close: OnClose | None = None,
        on_late: OnLate | None = None,
        idle_close: float | None = 30.0,
        event_time: Callable[[Event], float] | None = None,
    ) -> WindowedTable[K, V]:
        """Make this table hold sliding windows of ``size`` seconds, as Kafka Streams'
        ``SlidingWindows``: the windows ``[t - size, t]`` ending on each event and every
        other distinct set of events within ``size`` (see :mod:`streamer.state.sliding`).
        ``retention`` (default one day) must be at least ``size + grace``."""
        if retention is None:
            retention = max(DAY, size + grace)
        spec = sliding_spec(size, grace, retention)
        return self._windowed(spec, on_close, on_late, idle_close, event_time, None)

    def session(
        self,
        gap: float,
        *,
        grace: float = 0.0,
        retention: float | None = None,
        merge: Callable[[V, V], V] | None = None,
        on_close: OnClose | None = None,
        on_late: OnLate | None = None,
        idle_close: float | None = 30.0,
        event_time: Callable[[Event], float] | None = None,
    ) -> WindowedTable[K, V]:
        """Make this table hold session windows: per key, events at most ``gap`` seconds
        apart form one session ``[first, last]``; an event that bridges two sessions merges
        them, combining their values with ``merge(earlier, later)`` (default ``a + b``:
        counts, sums, lists). A session closes when stream time reaches its last event +
        ``gap`` + ``grace`` (see :mod:`streamer.state.sessions`)."""
        spec = session_spec(gap, grace, max(DAY, grace) if retention is None else retention)
        return self._windowed(spec, on_close, on_late, idle_close, event_time, merge)

    def _windowed(
        self,
        spec: WindowSpec,
        on_close: OnClose | None,
        on_late: OnLate | None,
        idle_close: float | None,
        event_time: Callable[[Event], float] | None,
        merge: Callable[[V, V], V] | None,
    ) -> WindowedTable[K, V]:
        if self.windowed is not None:
            raise ConfigError(f"table {self.name!r} is already windowed")
        self.holds_windows = True
        self.windowed = WindowedTable(
            self,
            spec=spec,
            on_close=on_close,
            on_late=on_late,
            idle_close=idle_close,
            event_time=event_time,
            merge=merge,
        )
        return self.windowed
