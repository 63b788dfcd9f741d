"""Session windows: per key, events at most ``gap`` apart form one session.

A session is ``[first event time, last event time]`` of a key. An event within ``gap`` of a
session (``start - gap <= t <= end + gap``) joins it; an event within ``gap`` of two sessions
bridges them: they merge into one, with the values combined by ``merge(a, b)`` (in time
order; default ``a + b``) and then updated by the event. The merged-away sessions are
deleted (changelog tombstones), in the same event.

Closing and lateness, in stream time (per table partition, as for every window):

- a session closes when the stream time reaches ``end + gap + grace``: ``on_close`` runs once
  for the final session, and it never changes again;
- an event is late (not applied, counted) when the session it would belong to is closed:
  it touches a closed session, or it touches none and ``t + gap + grace`` is not above the
  stream time. An event joining open sessions is applied, however old (their close times
  bound how late it can be).

Storage: a session is keyed like any window (its start, then the user key); its value is the
flag byte, then 8 bytes holding its end (the last event time, ms), then the value. Each
partition indexes in memory, per key, the starts of its sessions (a superset: a start whose
event failed is checked against the store and forgotten) and a heap of close times, both
rebuilt from the store on attach. Sessions are deleted once the stream time reaches
``end + gap + retention``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections.abc import Callable
from functools import reduce
from typing import Any

from streamer.state.keyed import TablePartition
from streamer.state.window_store import (
    CLOSED_FLAG,
    NEVER,
    OPEN_FLAG,
    WindowPartition,
    WindowSpec,
    Writer,
    window_key,
)

HEADER = 9  # flag byte + the session's end (8 bytes, big-endian ms)

# (start, end, stored value) of a stored session
Stored = tuple[int, int, bytes]


def pack(flag: bytes, end: int, encoded: bytes) -> bytes:
    return flag + end.to_bytes(8, "big") + encoded


def end_of(stored: bytes) -> int:
    """The end (last event time, ms) of a stored session."""
    return int.from_bytes(stored[1:HEADER], "big")


def session_spec(gap: float, grace: float, retention: float) -> WindowSpec:
    """The spec of sessions with an inactivity ``gap`` (seconds): ``size`` is the gap."""
    spec = WindowSpec.of(gap, gap, grace, retention)
    # Expiry passes run once per step of stream time: once a second is plenty.
    return WindowSpec(spec.size, 1000, spec.grace, spec.retention, "session")


class SessionPartition(WindowPartition):
    """The session state of one table partition: stream time, lateness and the closing
    protocol of :class:`WindowPartition`, with sessions closing by their end."""

    __slots__ = ("dues", "starts", "unsure")

    def __init__(self, part: TablePartition, spec: WindowSpec, now: float) -> None:
        super().__init__(part, spec, now)
        self.starts: dict[bytes, list[int]] = {}
        self.dues: list[tuple[int, int, bytes]] = []  # (close time, start, key), a min-heap
        # (key, start) created or deleted by writes that were staged, not yet settled: the
        # index keeps them until those writes are released (or undone), then follows the store.
        self.unsure: list[tuple[bytes, int]] = []

    def load(self, start: int, key: bytes, value: bytes) -> None:
        self.note(key, start)
        if value[:1] == OPEN_FLAG:
            self.add_open(start, key, end_of(value))

    def note(self, key: bytes, start: int) -> None:
        starts = self.starts.setdefault(key, [])
        i = bisect_right(starts, start)
        if not i or starts[i - 1] != start:
            insort(starts, start)

    def add_open(self, start: int, key: bytes, end: int | None = None) -> None:
        if end is None:  # re-opened (its close was undone): its end is in the store
            stored = self.part.read(window_key(start, key))
            if stored is None:
                return
            end = end_of(stored)
        due = end + self.spec.size + self.spec.grace
        heapq.heappush(self.dues, (due, start, key))
        self.next_due = min(self.next_due, due)

    def touching(self, key: bytes, t: int) -> list[Stored]:
        """The key's sessions within ``gap`` of ``t``, in time order."""
        starts = self.starts.get(key)
        if not starts:
            return []
        gap, part, found, gone = self.spec.size, self.part, [], []
        i = bisect_right(starts, t + gap)
        while i > 0:
            i -= 1
            window = window_key(starts[i], key)
            stored = part.read(window)
            if stored is None:
                if not part.pending(window):
                    gone.append(starts[i])
                continue
            if end_of(stored) < t - gap:
                break  # sessions are apart by more than gap: every earlier one ends earlier
            found.append((starts[i], end_of(stored), stored))
        for start in gone:
            starts.remove(start)
        found.reverse()
        return found

    def sessions_of(self, key: bytes) -> list[Stored]:
        """The key's stored sessions, in time order."""
        found = []
        for start in self.starts.get(key, []):
            stored = self.part.read(window_key(start, key))
            if stored is not None:
                found.append((start, end_of(stored), stored))
        return found

    def close_due(self, write: Writer, staged: bool) -> list[tuple[int, bytes, bytes]]:
        """As :meth:`WindowPartition.close_due`, for sessions: a session is due when the
        stream time reaches its end + gap + grace (its end as stored now: a session
        extended since it was indexed is put back with its new close time)."""
        part, spec = self.part, self.spec
        self._settle_closing()
        heap, closed, batch, keep = self.dues, [], [], []
        while heap and heap[0][0] <= self.stream:
            due, start, key = heapq.heappop(heap)
            window = window_key(start, key)
            if part.pending(window):
                keep.append((due, start, key))
                continue
            value = part.read(window)
            if value is None or value[:1] != OPEN_FLAG:
                continue  # merged away, undone, or already closed
            real = end_of(value) + spec.size + spec.grace
            if real > self.stream:
                keep.append((real, start, key))
            elif not write(window, CLOSED_FLAG + value[1:]):
                keep.append((due, start, key))
            else:
                closed.append((start, key, value))
                if staged:
                    batch.append((start, key))
        for item in keep:
            heapq.heappush(heap, item)
        if batch:
            self.closing.append(batch)
        self.next_due = heap[0][0] if heap else NEVER
        closed.sort()
        return closed

    def forget(self, key: bytes, start: int) -> None:
        starts = self.starts.get(key)
        if starts is not None and start in starts:
            starts.remove(start)
            if not starts:
                del self.starts[key]

    def _settle_unsure(self) -> None:
        """Sessions created or merged away by events whose writes are settled now: the index
        follows the store (a merge undone keeps both sessions; one released drops the old)."""
        part, waiting = self.part, []
        for key, start in self.unsure:
            window = window_key(start, key)
            if part.pending(window):
                waiting.append((key, start))
            elif part.read(window) is None:
                self.forget(key, start)
            else:
                self.note(key, start)
        self.unsure = waiting

    def expire_due(self, write: Writer) -> int:
        """Delete the closed sessions whose ``end + gap + retention`` the stream time has
        reached; returns how many. Candidates come from a scan of the oldest starts."""
        self._settle_unsure()
        spec = self.spec
        limit = self.stream - spec.size - spec.retention  # sessions ending <= limit expire
        self.next_expiry = self.stream + spec.step
        if limit < 0:
            return 0
        bound = (limit + 1).to_bytes(8, "big")
        part, found = self.part, []
        for key, _ in part.store.items():
            if key >= bound:
                break
            found.append(key)
        seen = set(found)
        found.extend(key for key in part.overlay if key < bound and key not in seen)
        expired = 0
        for window in found:
            value = part.read(window)
            if part.pending(window) or value is None or value[:1] != CLOSED_FLAG:
                continue
            if end_of(value) <= limit and write(window, None):
                expired += 1
                self.forget(window[8:], int.from_bytes(window[:8], "big"))
        return expired

    def plan(
        self,
        key: bytes,
        t: int,
        fn: Callable[[Any], Any],
        initial: Callable[[], Any],
        merge: Callable[[Any, Any], Any],
        decode: Callable[[bytes], Any],
    ) -> tuple[Stored, Any, list[tuple[int, int, Any]]] | None:
        """What an event at ``t`` does: None when it is late; else ``((start, end, old
        stored or b""), new value, [(start, end, value) of the sessions merged away])``.
        Reads only; the caller stages the writes."""
        touching = self.touching(key, t)
        if any(stored[:1] != OPEN_FLAG for _, _, stored in touching):
            return None  # it would merge into a closed session
        if not touching:
            if t + self.spec.size + self.spec.grace <= self.stream:
                return None
            return (t, t, b""), fn(initial()), []
        values = [decode(stored[HEADER:]) for _, _, stored in touching]
        start, end = min(t, touching[0][0]), max(t, touching[-1][1])
        kept = next((stored for s, _, stored in touching if s == start), b"")
        gone = [(s, e, v) for (s, e, _), v in zip(touching, values, strict=True) if s != start]
        return (start, end, kept), fn(reduce(merge, values)), gone


__all__ = ["HEADER", "SessionPartition", "end_of", "pack", "session_spec"]
