"""Windowed tables: per-key values per time window, closed and expired by stream time.

``app.table(...).tumbling(60.0, grace=10.0)`` (or ``.hopping(size, step, ...)``,
``.sliding(size, ...)``, ``.session(gap, ...)``) returns a :class:`WindowedTable`. Which
windows a sliding or session table holds, and when they close: :mod:`streamer.state.sliding`,
:mod:`streamer.state.sessions`; what follows holds for every kind. Inside an agent::

    counts[event.key] += 1              # every window containing the event time
    counts[event.key].current()         # the latest window containing the event time
    counts[event.key].at(ts)            # the window containing epoch seconds ts
    counts[event.key].range(a, b)       # [(window start, value)] of windows overlapping [a, b)

Contracts:

- Event time is the record timestamp (ms), or ``event_time(event)`` (epoch seconds).
  Windows are epoch-aligned ``[start, end)``. Stream time, per table partition, is the
  largest event time written so far (an event that failed and was retried included), plus
  the idle time credited to it (below).
- A write goes to every window containing the event time that is still open: not past
  ``end + grace`` at stream time and not closed. An event none of whose windows is open is
  late: not applied, counted (per partition, stored with the window metadata, exported
  as ``streamer_late_events_total``, logged: :mod:`streamer.state.lateness`), passed to
  ``on_late``.
- When stream time reaches ``end + grace``, the window is marked closed and
  ``on_close(key, start, end, value)`` runs once for it. A close caused by an event runs
  inside that event: what the callback sends (``Topic.send``) is staged with the event and
  commits with it, and the close is undone with it if the agent fails. Callbacks run
  synchronously until they first suspend: ``await topic.send(...)`` never suspends inside a
  worker; a callback that awaits real I/O finishes in a task, outside the event (logged once).
- Idle partitions: once no window of a partition was written for ``idle_close`` seconds,
  ``tick`` (about once a second, wall clock) credits the idle wall-clock time to its stream
  time, so its windows close (outside any event: their sends go through the worker's
  producer, into the open transaction under exactly-once) and expire; no window waits
  forever.
- Windows are deleted (changelog tombstones) once stream time reaches ``end + retention``.
- Callback errors are logged, never fatal; the window stays closed.

Storage and the in-memory index: see :mod:`streamer.state.window_store`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, cast

from streamer._context import Stager, current_event, current_lane
from streamer.clock import current_clock, to_millis
from streamer.errors import ConfigError, StreamerError
from streamer.events import Event
from streamer.state.keyed import K, KeyedTable, TablePartition, V
from streamer.state.lateness import LateEvents
from streamer.state.sessions import HEADER, SessionPartition, end_of
from streamer.state.sliding import SlidingPartition
from streamer.state.window_callbacks import CallbackRunner, OutputBuffer
from streamer.state.window_kinds import (
    PARTITION_KINDS,
    WindowView,
    apply_grid,
    apply_session,
    apply_sliding,
)
from streamer.state.window_set import WindowSet
from streamer.state.window_store import (
    META_KEY,
    WindowPartition,
    WindowSpec,
    split_key,
    window_key,
)

if TYPE_CHECKING:
    from streamer.topics import Topic

log = logging.getLogger("streamer.windows")

OnClose = Callable[[Any, float, float, Any], Awaitable[None] | None]
OnLate = Callable[[Event], Awaitable[None] | None]
DAY = 86_400.0


class WindowedTable(Generic[K, V]):
    """A table whose values live per (key, window). Create with ``Table.tumbling``,
    ``Table.hopping``, ``Table.sliding`` or ``Table.session``; see the module docstring for
    the contracts.

    ``retention`` (seconds after a window's end; default one day, at least ``grace``) bounds
    how long past windows stay readable. ``idle_close=None`` disables wall-clock closing;
    otherwise it trades completeness for liveness: events that arrive after an idle spell
    with times the credited stream time has passed are late. Set it above the longest pause
    the producers may take.
    """

    def __init__(
        self,
        table: KeyedTable[K, V],
        *,
        spec: WindowSpec,
        on_close: OnClose | None,
        on_late: OnLate | None,
        idle_close: float | None,
        event_time: Callable[[Event], float] | None,
        merge: Callable[[V, V], V] | None = None,
    ) -> None:
        if idle_close is not None and not idle_close > 0:
            raise ConfigError(f"idle_close must be > 0 seconds or None, got {idle_close}")
        self.table = table
        self.spec = spec
        self.kind = spec.kind
        self._header = 1 if spec.kind == "hopping" else HEADER  # flag (+ 8 bytes: end/last)
        self.merge = merge if merge is not None else operator.add
        self.on_close = on_close
        self.on_late = on_late
        self.idle_close = idle_close
        self.event_time = event_time
        self.lateness = LateEvents(table.name)
        self.closed_windows = 0
        self.expired_windows = 0
        self._parts: dict[int, WindowPartition] = {}
        self._callbacks = CallbackRunner(table.name)
        self._updates: list[Topic] = []  # stream_to(topic): every update
        self._finals: list[Topic] = []  # stream_to(topic, final=True): closed windows

    @property
    def name(self) -> str:
        return self.table.name

    def __repr__(self) -> str:
        spec = self.spec
        if self.kind == "hopping":
            shape = f"size={spec.size / 1000}s, step={spec.step / 1000}s"
        else:
            shape = f"{self.kind}, {'gap' if self.kind == 'session' else 'size'}={self.width}s"
        return f"WindowedTable({self.name!r}, {shape})"

    @property
    def width(self) -> float:
        """Sliding windows' size, sessions' gap (seconds)."""
        return (self.spec.size - (self.kind == "sliding")) / 1000

    def window_end(self, start: int, stored: bytes) -> int:
        """The end (ms) of the window stored at ``start``: exclusive for tumbling and hopping
        windows, the last included millisecond (the latest event's) for sliding windows and
        sessions."""
        if self.kind == "session":
            return end_of(stored)
        if self.kind == "sliding":
            return start + self.spec.size - 1
        return start + self.spec.size

    def stored_value(self, stored: bytes) -> Any:
        """The value of a stored window (past its flag and header)."""
        return self._decode(stored)

    # -- the dict-like surface ---------------------------------------------------------------

    def __getitem__(self, key: K) -> WindowSet:
        return WindowSet(self, key)

    def __setitem__(self, key: K, value: V | WindowSet) -> None:
        """``t[k] = v`` sets every open window containing the event time to ``v``.
        (``t[k] += 1`` lands here too, with the WindowSet it already updated: nothing to do.)"""
        if isinstance(value, WindowSet):
            if value.table is cast(WindowView, self) and value.key == key:
                return
            raise TypeError("assign a value to a window set, not the windows of another key")
        self._update(key, lambda _: value, read=False)

    def items(self) -> Iterator[tuple[tuple[K, float], V]]:
        """``((key, window start), value)`` of every window (open or closed, not expired)
        of the partitions this worker owns, in time order per partition."""
        serde = self.table.key_serde
        for part in list(self.table.owned.values()):
            for window, value in part.items():
                if window != META_KEY and len(window) >= 8:
                    start, key = split_key(window)
                    yield (serde.deserialize(key), start / 1000), self._decode(value)

    def as_dict(self) -> dict[tuple[K, float], V]:
        return dict(self.items())

    def stream_time(self, partition: int) -> float | None:
        """Partition ``partition``'s stream time (epoch seconds), None before any event."""
        part = self.table.owned.get(partition)
        if part is None:
            return None
        stream = self._state(part).stream
        return None if stream < 0 else stream / 1000

    # -- reads -------------------------------------------------------------------------------

    def _read_window(self, key: Any, start: int) -> bytes | None:
        data = window_key(start, self.table._key(key))
        part, _ = self.table._here()
        if part is not None:
            return part.read(data)
        for candidate in list(self.table.owned.values()):
            value = candidate.read(data)
            if value is not None:
                return value
        return None

    def _decode(self, stored: bytes) -> Any:
        return self.table.value_serde.deserialize(stored[self._header :])

    def _value(self, stored: bytes | None) -> Any:
        if stored is not None:
            return self._decode(stored)
        return None if self.table.default is None else self.table.default()

    def _now_ms(self) -> int:
        """The event time of the event in progress; the wall clock outside any event."""
        _, lane = self.table._here()
        if lane is None:
            return to_millis(current_clock.get().time())
        return self._time(self._event(lane))

    def _event(self, lane: Stager) -> Event:
        """The event in progress in ``lane``. In a ``take()`` batch of several events: the
        one the agent's ``for event in batch`` loop is at; failing that, any of them when
        they all have the same time. Otherwise the write's time is ambiguous: an error
        (filing it under another event's time would silently count it in the wrong window).
        """
        current = getattr(lane, "current", None)
        if not current:
            raise StreamerError(f"windowed table {self.name!r} used while no event is in progress")
        event: Event = current[-1].event
        if len(current) == 1:
            return event
        focus = current_event.get()
        if focus is not None and any(pending.event is focus for pending in current):
            return focus
        if len({self._time(pending.event) for pending in current}) == 1:
            return event
        raise StreamerError(
            f"windowed table {self.name!r} written in a take() batch without telling which "
            "event the write is for; write it inside `for event in batch:` so each write "
            "uses its own event's time"
        )

    def _time(self, event: Event) -> int:
        if self.event_time is None:
            return event.timestamp
        return to_millis(self.event_time(event))

    # -- writes ------------------------------------------------------------------------------

    def _update(self, key: Any, fn: Callable[[Any], Any], *, read: bool = True) -> None:
        """Apply ``fn`` (old value -> new value) to every open window of ``key`` containing
        the event time, staged with the event; close what the event's time closes."""
        table = self.table
        part, lane = table._here()
        if part is None:
            raise StreamerError(
                f"windowed table {self.name!r} is written outside an agent; windows change "
                "only while an agent processes an event (so the change commits with it)"
            )
        event = self._event(lane)
        t = self._time(event)
        state = self._state(part)
        state.last_event = state.idle_from = current_clock.get().time()
        advanced = t > state.stream
        if advanced:
            state.stream = t
        if state.stream >= state.next_due or state.closing:
            self._close(state, lane)
        data = table._key(key)
        if isinstance(state, SlidingPartition):
            applied = apply_sliding(self, state, lane, key, data, t, fn, read)
        elif isinstance(state, SessionPartition):
            applied = apply_session(self, state, lane, key, data, t, fn, read)
        else:
            applied = apply_grid(self, state, lane, key, data, t, fn, read)
        if advanced:
            lane.stage_write(part.stage(META_KEY, state.meta()))
        if not applied:
            self._late(state, event, t, lane)
        if state.stream >= state.next_expiry:
            self._expire(state, lane)

    @property
    def late_events(self) -> int:
        """Late events this process counted (all partitions); see :class:`LateEvents`."""
        return self.lateness.total

    def _late(self, state: WindowPartition, event: Event, t: int, lane: Stager) -> None:
        if state.last_late is event:
            return  # one event, several writes (or a retried attempt): counted once
        state.last_late = event
        state.late += 1
        lane.stage_write(state.part.stage(META_KEY, state.meta()))  # the count survives
        behind = state.stream - t
        # The end (exclusive) of the event's own window: the grace that would have kept it.
        if self.kind == "hopping":
            end = self.spec.last_start(t) + self.spec.size if t >= 0 else 0
        else:  # sliding: its left window [t - size, t]; session: at worst, a session it
            end = t + (self.kind == "sliding")  # touches that ended gap before it (+ gap)
        needed = max(0, state.stream - end + 1)
        self.lateness.count(
            state.part.partition, state.late, behind, needed, current_clock.get().time()
        )
        if self.on_late is not None:
            self._call("on_late", self.on_late, event)

    # -- closing and expiry ------------------------------------------------------------------

    def _state(self, part: TablePartition) -> WindowPartition:
        state = self._parts.get(part.partition)
        if state is None or state.part is not part:  # attached anew: rebuild from the store
            kind = PARTITION_KINDS.get(self.kind, WindowPartition)
            state = kind.rebuild(part, self.spec, current_clock.get().time())
            self._parts[part.partition] = state
            self.lateness.attached(part.partition, state.late)
            log.debug(
                "%s: %d open window start(s), stream time %d", part.label, len(state.open),
                state.stream,
            )  # fmt: skip
        return state

    def _writer(self, part: TablePartition, lane: Stager | None) -> Callable[..., bool]:
        if lane is None:
            return part.write_now

        def staged(key: bytes, value: bytes | None) -> bool:
            lane.stage_write(part.stage(key, value))
            return True

        return staged

    def _close(self, state: WindowPartition, lane: Stager | None) -> int:
        """Close the windows due; returns how many. Inside an event (``lane``) the close
        markers and the callbacks' sends are staged with it; from a tick, see
        :meth:`_close_outside`."""
        if lane is None:
            return self._close_outside(state)
        closed = state.close_due(self._writer(state.part, lane), staged=True)
        self.closed_windows += len(closed)
        if self.on_close is not None or self._finals:
            for args in self._close_args(closed):
                if self._finals:
                    self._emit(lane, self._finals, *args)
                if self.on_close is not None:
                    self._call("on_close", self.on_close, *args)
        return len(closed)

    def stream_to(self, topic: Topic, *, final: bool = False) -> Topic:
        """Send this table's window updates to ``topic`` and return it, for an agent to
        read (Kafka Streams' ``toStream()`` of a windowed table). Each record's key is the
        table key; its value ``{"start": s, "end": e, "value": v}`` (seconds; declare the
        topic with ``value_type=dict``).

        Every update (default): one record per window an event changed, with the new value,
        staged with that event (so it commits with it, and is undone with it). ``final=True``
        (emit-final, "suppress"): one record per window when it closes, with its final value,
        committed with the window's close marker: once per window, as ``on_close``.

        Agents of the same app may read ``topic``: it is not a source topic of the table
        (they can read tables, not write them).
        """
        (self._finals if final else self._updates).append(topic)
        return topic

    @property
    def streams(self) -> set[str]:
        """Names of the topics :meth:`stream_to` sends to."""
        return {topic.name for topic in (*self._updates, *self._finals)}

    def _emit(
        self, stager: Stager, topics: list[Topic], key: Any, start: float, end: float, value: Any
    ) -> None:
        """Stage one record of a window (seconds) on each of ``topics``."""
        dump = getattr(value, "model_dump", None)  # pydantic values as their JSON
        body = {
            "start": start,
            "end": end,
            "value": dump(mode="json") if callable(dump) else value,
        }
        for topic in topics:
            stager.stage(topic.name, topic.encode_key(key), topic.encode_value(body), None)

    def _close_args(
        self, closed: list[tuple[int, bytes, bytes]]
    ) -> list[tuple[Any, float, float, Any]]:
        """``on_close`` arguments of closed windows (those that cannot be decoded: logged)."""
        result = []
        for start, key, stored in closed:
            try:
                user_key, value = self.table.key_serde.deserialize(key), self._decode(stored)
            except Exception:
                log.exception("window %s of table %r cannot be decoded", start, self.name)
                continue
            result.append((user_key, start / 1000, self.window_end(start, stored) / 1000, value))
        return result

    def _close_outside(self, state: WindowPartition) -> int:
        """An idle tick's close: the markers wait until every ``on_close`` of the tick has
        finished, then enter the worker's checkpoint in one step with the callbacks'
        outputs (so one commit carries both, or neither)."""
        part, marks = state.part, []

        def defer(key: bytes, value: bytes | None) -> bool:
            if part.pending(key):
                return False  # an event in flight holds a write: close it later
            marks.append((key, value))
            return True

        closed = state.close_due(defer, staged=False)
        if not closed:
            return 0
        self.closed_windows += len(closed)
        stager = current_lane.get()
        if stager is None or stager.partition >= 0:
            raise StreamerError("windows closed by a tick need the worker's checkpoint")
        args = self._close_args(closed)
        buffer, tasks = (
            self._callbacks.call_outside("on_close", self.on_close, args)
            if self.on_close is not None
            else (OutputBuffer(), [])
        )
        for closed_args in args if self._finals else ():
            self._emit(buffer, self._finals, *closed_args)

        def apply() -> None:
            if self._parts.get(part.partition) is not state or (
                self.table.owned.get(part.partition) is not part
            ):
                # Moved or rewound meanwhile: nothing of this close was committed; the
                # partition's owner closes these windows again from the committed state.
                log.info("%s: idle close dropped (partition moved); it is redone", part.label)
                return
            for key, value in marks:
                if not part.write_now(key, value):
                    log.error("%s: close marker of %r refused", part.label, key)
            for output in buffer.outputs:
                stager.stage(*output)

        if not tasks:
            apply()
        else:

            async def after() -> None:
                await asyncio.gather(*tasks, return_exceptions=True)
                apply()

            self._callbacks.keep(asyncio.ensure_future(after()), "idle close")
        return len(closed)

    def _expire(self, state: WindowPartition, lane: Stager | None) -> int:
        """Delete the windows past their retention; returns how many."""
        expired = state.expire_due(self._writer(state.part, lane))
        self.expired_windows += expired
        return expired

    def tick(self, now: float) -> None:
        """Wall-clock duties (see the module docstring); never raises."""
        self.lateness.report(now)
        owned = self.table.owned
        for partition in [p for p in self._parts if p not in owned]:
            del self._parts[partition]
        for part in list(owned.values()):
            try:
                self._tick(part, now)
            except Exception:
                log.exception("windows of %s: tick failed; retrying at the next one", part.label)

    def _tick(self, part: TablePartition, now: float) -> None:
        state = self._state(part)
        if state.stream < 0:
            return
        if self.idle_close is not None and now - state.last_event >= self.idle_close:
            # Floored, and idle_from moves by what was credited: credits never run ahead of
            # the wall clock, however many ticks add them up.
            credit = math.floor((now - state.idle_from) * 1000)
            if credit > 0:
                state.stream += credit
                state.idle_from += credit / 1000
        changed = 0
        if state.stream >= state.next_due or state.closing:
            changed += self._close(state, None)
        if state.stream >= state.next_expiry:
            changed += self._expire(state, None)
        if changed:
            # Persist the stream time that closed or expired windows. Not every credit: an
            # idle partition must not write (and commit a transaction) every second, and
            # the close markers, not the stream time, keep closes exact. Refused while an
            # event holds a staged meta write: that event writes it.
            part.write_now(META_KEY, state.meta())

    # -- callbacks ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a user callback inside the event in progress (see
        :mod:`streamer.state.window_callbacks`); errors are logged, never raised."""
        self._callbacks.call(what, fn, *args)
