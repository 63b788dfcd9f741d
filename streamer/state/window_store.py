"""How windowed tables lay out their state, and the in-memory index of one partition's windows.

Storage (in the table's own partition stores and compacted changelog, through the same
:class:`~streamer.state.keyed.TablePartition` machinery as any table):

- a window's key is its start (milliseconds since the epoch, 8 bytes big-endian) followed by
  the serialized user key, so a partition's windows iterate in time order (closing, expiry);
- its value is one flag byte (``OPEN`` or ``CLOSED``) followed by the serialized value. The
  flag is the close record: a window is marked ``CLOSED`` in the same event (or, from an idle
  tick, the same checkpoint) as the outputs of its ``on_close``, so after a restart or a
  hand-over a window closes exactly when its marker says it has not (never twice, never lost,
  whatever order concurrent lanes released their writes in);
- ``META_KEY`` (8 bytes of 0xFF, above every window start, then ``__meta__``) holds the
  partition's stream time and its count of late events as JSON, written with the event
  that advanced it or was late (and by an idle tick that closed or expired windows), so
  lateness and expiry resume where they were.

:class:`WindowPartition` keeps, per table partition, the stream time and an index of the
windows still open, so closing never scans the store per event. It is rebuilt from the
store when a table partition is attached (recovery, hand-over, rewind): the index belongs
to one :class:`TablePartition` object and is never reused for another.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from streamer.errors import ConfigError
from streamer.state.keyed import TablePartition

META_KEY = b"\xff" * 8 + b"__meta__"
OPEN = 0
CLOSED = 1
OPEN_FLAG = b"\x00"
CLOSED_FLAG = b"\x01"
NEVER = 2**63  # a due time no stream time reaches

# write(key, value) -> whether it was written (a write from a tick is refused while an
# event in flight holds a staged write on the same key).
Writer = Callable[[bytes, "bytes | None"], bool]


def window_key(start: int, key: bytes) -> bytes:
    return start.to_bytes(8, "big") + key


def split_key(window: bytes) -> tuple[int, bytes]:
    """``(start ms, serialized user key)`` of a window key."""
    return int.from_bytes(window[:8], "big"), window[8:]


def _ms(seconds: float, what: str) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"window {what} must be a finite number of seconds >= 0, got {seconds}")
    return round(seconds * 1000)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Epoch-aligned ``[start, end)`` windows, all times in milliseconds.

    Windows start at every multiple of ``step`` and last ``size`` (tumbling: ``step ==
    size``). A window takes events while the stream time is below ``end + grace``; it
    closes once the stream time reaches that, and is deleted once it reaches
    ``end + retention``.
    """

    size: int
    step: int
    grace: int
    retention: int
    # "hopping" (tumbling too), "sliding" or "session": see streamer.state.sliding and
    # streamer.state.sessions for what size and step mean for the last two.
    kind: str = "hopping"

    @classmethod
    def of(cls, size: float, step: float, grace: float, retention: float) -> WindowSpec:
        """The spec for times in seconds; raises ConfigError when they do not make sense."""
        spec = cls(
            _ms(size, "size"), _ms(step, "step"), _ms(grace, "grace"), _ms(retention, "retention")
        )
        if spec.size <= 0 or spec.step <= 0:
            raise ConfigError(f"window size and step must be > 0 (got {size}s and {step}s)")
        if spec.step > spec.size:
            raise ConfigError(
                f"hopping step ({step}s) is larger than the window size ({size}s): events "
                "between windows would belong to none; use a step <= size"
            )
        if spec.retention < spec.grace:
            raise ConfigError(
                f"window retention ({retention}s) is shorter than grace ({grace}s): windows "
                "would be deleted before they close; use retention >= grace"
            )
        return spec

    def last_start(self, t: int) -> int:
        """The start of the latest window containing ``t`` (ms)."""
        return t - t % self.step

    def starts(self, t: int) -> list[int]:
        """Starts of every window containing ``t``, newest first (none before the epoch)."""
        start, size, step = t - t % self.step, self.size, self.step
        result = []
        while start > t - size and start >= 0:
            result.append(start)
            start -= step
        return result

    def overlapping(self, start: int, end: int) -> range:
        """Starts of the windows that overlap ``[start, end)`` (ms), in time order."""
        if end <= start:
            return range(0)
        first = max(0, start - self.size + 1)
        first += -first % self.step  # round up to a multiple of step
        return range(first, max(first, end), self.step)

    def late_before(self, stream: int) -> int:
        """Windows starting at or before this (ms) are past their grace at ``stream``."""
        return stream - self.size - self.grace

    def expired_before(self, stream: int) -> int:
        """Windows starting at or before this (ms) are past their retention at ``stream``."""
        return stream - self.size - self.retention


class WindowPartition:
    """The window state of one table partition on this worker (loop thread only).

    ``stream`` is the partition's stream time (ms; -1 before any event): the maximum event
    time seen, plus the wall-clock time credited while the partition was idle. ``open``
    indexes the windows not yet closed (start -> user keys), ``heap`` their starts.
    ``closing`` holds windows whose close marker is staged with an event that has not been
    released yet: they are checked again (re-opened if that event's writes were undone).
    """

    __slots__ = (
        "closing",
        "expired_step",
        "heap",
        "idle_from",
        "last_event",
        "last_late",
        "late",
        "next_due",
        "next_expiry",
        "open",
        "part",
        "spec",
        "stream",
    )

    def __init__(self, part: TablePartition, spec: WindowSpec, now: float) -> None:
        self.part = part
        self.spec = spec
        self.stream = -1
        self.open: dict[int, set[bytes]] = {}
        self.heap: list[int] = []
        self.closing: list[list[tuple[int, bytes]]] = []
        self.next_due = NEVER
        self.expired_step = -1  # expiry has run for starts up to (expired_step * step)
        self.next_expiry = spec.size + spec.retention  # the first pass runs at once
        self.last_event = now  # wall clock: the last window update (or the attach)
        self.idle_from = now  # wall clock: idle time before this is already credited
        self.last_late: object = None  # the last event counted late (count each once)
        self.late = 0  # late events of this partition, ever (stored in the metadata)

    @classmethod
    def rebuild(cls, part: TablePartition, spec: WindowSpec, now: float) -> WindowPartition:
        """Index ``part``'s open windows and read its stream time (one scan of the store)."""
        state = cls(part, spec, now)
        for key, value in part.items():
            if key == META_KEY:
                meta = orjson.loads(value)
                state.stream = int(meta.get("stream", -1))
                state.late = int(meta.get("late", 0))
            elif len(key) >= 8:
                start, user_key = split_key(key)
                state.load(start, user_key, value)
        return state

    def load(self, start: int, key: bytes, value: bytes) -> None:
        """Index one stored window while rebuilding (kinds with more to index extend it)."""
        if value[:1] == OPEN_FLAG:
            self.add_open(start, key)

    def meta(self) -> bytes:
        return orjson.dumps({"stream": self.stream, "late": self.late})

    def add_open(self, start: int, key: bytes) -> None:
        keys = self.open.get(start)
        if keys is None:
            keys = self.open[start] = set()
            heapq.heappush(self.heap, start)
            due = start + self.spec.size + self.spec.grace
            if due < self.next_due:
                self.next_due = due
        keys.add(key)

    def close_due(self, write: Writer, staged: bool) -> list[tuple[int, bytes, bytes]]:
        """Mark every open window past its grace ``CLOSED`` through ``write``; return them
        as ``(start, user key, stored value)`` in time order, for ``on_close``.

        A window with a write staged by an event still in flight is left for later (its
        value is not final, and that event's release would overwrite the marker). With
        ``staged`` the markers are held by the current event, which may still be undone:
        such windows wait in ``closing`` until that is settled.
        """
        part = self.part
        self._settle_closing()
        limit = self.spec.late_before(self.stream)
        heap, closed, batch, keep = self.heap, [], [], []
        while heap and heap[0] <= limit:
            start = heapq.heappop(heap)
            keys = self.open.pop(start, None)
            if not keys:
                continue
            left = set()
            prefix = start.to_bytes(8, "big")
            for key in sorted(keys):  # a stable order for the callbacks
                window = prefix + key
                if part.pending(window):
                    left.add(key)
                    continue
                value = part.read(window)
                if value is None or value[:1] != OPEN_FLAG:
                    continue  # undone, or already closed
                if not write(window, CLOSED_FLAG + value[1:]):
                    left.add(key)
                    continue
                closed.append((start, key, value))
                if staged:
                    batch.append((start, key))
            if left:
                keep.append((start, left))
        for start, left in keep:
            self.open[start] = left
            heapq.heappush(heap, start)
        if batch:
            self.closing.append(batch)
        self.next_due = heap[0] + self.spec.size + self.spec.grace if heap else NEVER
        return closed

    def _settle_closing(self) -> None:
        """Close markers staged with events: once released they are final; once undone
        (the event failed) the window is open again and must close again."""
        if not self.closing:
            return
        part, waiting = self.part, []
        for batch in self.closing:
            # One event staged the whole batch: its writes are released or undone together.
            if part.pending(window_key(*batch[0])):
                waiting.append(batch)
                continue
            for start, key in batch:
                value = part.read(window_key(start, key))
                if value is not None and value[:1] == OPEN_FLAG:
                    self.add_open(start, key)
        self.closing = waiting

    def expire_due(self, write: Writer) -> int:
        """Delete (tombstone, through ``write``) the closed windows past their retention;
        returns how many. Runs once per ``step`` of stream time: windows start on multiples
        of ``step``, so only then can new ones expire. Scans the store's oldest keys (in time
        order, stopping at the first window still kept) and the unflushed overlay."""
        spec = self.spec
        limit = spec.expired_before(self.stream)
        if limit < 0:
            return 0
        self.expired_step = limit // spec.step
        self.next_expiry = (self.expired_step + 1) * spec.step + spec.size + spec.retention
        bound = (limit + 1).to_bytes(8, "big")
        part = self.part
        found = []
        for key, _ in part.store.items():
            if key >= bound:
                break
            found.append(key)
        seen = set(found)
        found.extend(key for key in part.overlay if key < bound and key not in seen)
        expired = 0
        for key in found:
            if part.pending(key):
                continue
            value = part.read(key)
            # Still open: its close is pending (deferred); it expires at a later pass.
            if value is None or value[:1] != CLOSED_FLAG:
                continue
            if write(key, None):
                expired += 1
        return expired
