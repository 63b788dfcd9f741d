"""Sliding windows, as Kafka Streams' ``SlidingWindows``: windows of a fixed ``size``
defined by the records' times rather than by a grid.

For each key, the windows are every distinct set of its records that fits within ``size``:

- the *left* window of each record time ``r``: ``[r - size, r]`` (both ends included), the
  window "of" the event, ending on it;
- the *right* window of ``r``: ``[r + 1, r + 1 + size]``, when some record lies in it (the
  records that follow ``r`` within ``size``).

Why both: for any interval ``[a, a + size]`` holding records, let ``M`` be its latest record.
If no record lies in ``[M - size, a)``, the left window of ``M`` holds exactly the same
records; else, with ``o`` the latest record there, the right window of ``o`` does. So the
family is closed: a window a new event needs (its own left and right windows, and the right
windows its time fills) always starts from a copy of an existing window with the same
records, and each window's value is the aggregate of exactly the events in it, whatever the
order they came in (for an order-insensitive aggregate: counts, sums, sets, max).

Storage: windows are keyed like any window (start, then the user key); the value is the flag
byte, then 8 bytes holding the window's latest record time, then the value. A key's record
times are therefore the latest record times of its stored windows (the left window of ``r``
has latest time ``r``); each partition indexes them in memory per key, rebuilt from the
store on attach. The index is a superset: a time whose event failed (its writes undone) is
checked against the store and forgotten.

Internally a window is ``[start, start + size + 1)`` (the same arithmetic as fixed windows):
it takes events until the stream time reaches ``end + 1 ms + grace``, where ``end`` is its
last included millisecond. An event is late when its own left window is closed; every window
containing an event's time closes at or after its left window, so a non-late event is added
to all of them. Retention is at least ``size + grace`` (plus a millisecond): the windows a
new event copies from are never expired.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from streamer.errors import ConfigError, StreamerError
from streamer.state.keyed import TablePartition
from streamer.state.window_store import OPEN_FLAG, WindowPartition, WindowSpec, window_key

HEADER = 9  # flag byte + the window's latest record time (8 bytes, big-endian ms)

# (window start ms, its new value, its latest record time, created by this event)
Change = tuple[int, Any, int, bool]


def pack(flag: bytes, last: int, encoded: bytes) -> bytes:
    return flag + last.to_bytes(8, "big") + encoded


def last_of(stored: bytes) -> int:
    """The latest record time (ms) of a stored sliding window."""
    return int.from_bytes(stored[1:HEADER], "big")


class SlidingPartition(WindowPartition):
    """The window state of one sliding table partition: :class:`WindowPartition` (stream
    time, open windows, closing, expiry) plus the record times of each key."""

    __slots__ = ("times",)

    def __init__(self, part: TablePartition, spec: WindowSpec, now: float) -> None:
        super().__init__(part, spec, now)
        self.times: dict[bytes, list[int]] = {}

    @property
    def size(self) -> int:
        """The user's size (ms): a window is ``[start, start + size]``."""
        return self.spec.size - 1

    def load(self, start: int, key: bytes, value: bytes) -> None:
        super().load(start, key, value)
        self.note(key, last_of(value))

    def note(self, key: bytes, t: int) -> None:
        times = self.times.setdefault(key, [])
        i = bisect_left(times, t)
        if i == len(times) or times[i] != t:
            times.insert(i, t)

    def expire_due(self, write: Callable[[bytes, bytes | None], bool]) -> int:
        touched: set[bytes] = set()

        def tracking(window: bytes, value: bytes | None) -> bool:
            done = write(window, value)
            if done:
                touched.add(window[8:])
            return done

        expired = super().expire_due(tracking)
        # Record times whose left window expired are never needed again (see the module
        # docstring: retention covers every window a new event can copy from). Only the
        # keys that lost windows now can have such times.
        limit = self.spec.expired_before(self.stream) + self.size
        for key in touched:
            times = self.times.get(key)
            if times is not None:
                del times[: bisect_right(times, limit)]
                if not times:
                    del self.times[key]
        return expired

    def record_times(self, key: bytes, lo: int, hi: int) -> list[int]:
        """The key's record times in ``[lo, hi]`` (ms), checked against the store; times
        whose event was undone are forgotten."""
        times = self.times.get(key)
        if not times:
            return []
        part, size, real, gone = self.part, self.size, [], []
        for r in times[bisect_left(times, lo) : bisect_right(times, hi)]:
            window = window_key(r - size, key)
            stored = part.read(window)
            if stored is not None and last_of(stored) == r:
                real.append(r)
            elif not part.pending(window):
                gone.append(r)
        for r in gone:
            times.remove(r)
        return real

    def windows_of(self, key: bytes) -> list[tuple[int, bytes]]:
        """``(start, stored value)`` of the key's stored windows, in start order."""
        times = self.times.get(key, [])
        starts = sorted({r - self.size for r in times} | {r + 1 for r in times})
        found = []
        for start in starts:
            stored = self.part.read(window_key(start, key)) if start >= 0 else None
            if stored is not None:
                found.append((start, stored))
        return found

    def plan(
        self,
        key: bytes,
        t: int,
        fn: Callable[[Any], Any],
        initial: Callable[[], Any],
        decode: Callable[[bytes], Any],
    ) -> list[Change]:
        """What an event at ``t`` (not late) changes: every window containing ``t`` gets
        ``fn`` applied, and the windows its time adds to the family are created from a copy
        of the window holding the same earlier records (``initial()`` when none). Reads
        only; the caller stages the changes and calls :meth:`note`."""
        size = self.size
        times = self.record_times(key, t - 2 * size - 1, t + size + 1)
        part = self.part

        def read(start: int) -> bytes | None:
            return part.read(window_key(start, key)) if start >= 0 else None

        def same_records(a: int) -> int | None:
            """The start of the stored window holding the records of ``[a, a + size]``."""
            i = bisect_right(times, a + size) - 1  # the latest record up to a + size
            if i < 0 or times[i] < a:
                return None
            latest, j = times[i], bisect_left(times, a) - 1  # j: the latest before a
            return latest - size if j < 0 or times[j] < latest - size else times[j] + 1

        targets = {t - size, t + 1}
        targets.update(r - size for r in times if t <= r <= t + size)  # left, containing t
        targets.update(r + 1 for r in times if t - size - 1 <= r < t)  # right, containing t
        changes: list[Change] = []
        for start in sorted(targets):
            if start < 0:
                continue
            contains = start <= t <= start + size
            stored = read(start)
            if stored is not None:
                if not contains or stored[:1] != OPEN_FLAG:
                    continue
                changes.append((start, fn(decode(stored[HEADER:])), max(last_of(stored), t), False))
                continue
            base = same_records(start)
            if base is None:
                if contains:
                    changes.append((start, fn(initial()), t, True))
                continue
            copied = read(base)
            if copied is None:  # the family's invariant broke: say so rather than miscount
                raise StreamerError(
                    f"{part.label}: sliding window {base} of key {key!r} is missing "
                    "(expired early?); its copy cannot be made"
                )
            value, last = decode(copied[HEADER:]), last_of(copied)
            if contains:
                changes.append((start, fn(value), max(last, t), True))
            else:
                changes.append((start, value, last, True))
        return changes


def sliding_spec(size: float, grace: float, retention: float) -> WindowSpec:
    """The spec of sliding windows of ``size`` seconds (see the module docstring)."""
    user = WindowSpec.of(size, size, grace, retention)
    if user.retention < user.size + user.grace:
        raise ConfigError(
            f"sliding window retention ({retention}s) is shorter than size + grace "
            f"({size + grace}s): new windows are copied from windows that old; use "
            "retention >= size + grace"
        )
    # Expiry passes run once per step of stream time: once a second is plenty.
    step = max(1, min(user.size, 1000))
    retention_ms = max(user.retention, user.size + 1 + user.grace)
    return WindowSpec(user.size + 1, step, user.grace, retention_ms, "sliding")


__all__ = ["HEADER", "SlidingPartition", "last_of", "pack", "sliding_spec"]
