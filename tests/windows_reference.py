"""Plain-Python references for sliding windows and sessions: what the final windows of a
counting table must be, computed from the input alone (no streamer code), by the rules
docs/windows.md states.

Input: ``(key, partition, time ms)`` in offset order per partition (each key lives in one
partition). Stream time is per partition: the largest time seen so far. Output: a Counter of
``(key, start ms, end ms, count)`` (each final window once) and the number of late events.
"""

from __future__ import annotations

from collections import Counter, defaultdict

Timed = tuple[str, int, int]  # key, partition, time (ms)
Window = tuple[str, int, int, int]  # key, start, end (both included, ms), count


def sliding(events: list[Timed], size: int, grace: int) -> tuple[Counter[Window], int]:
    """Sliding windows of ``size`` ms: an event counts unless its own window
    ``[t - size, t]`` had closed (stream time >= t + 1 + grace) when it came. The windows of a
    key are ``[r - size, r]`` for each accepted time ``r`` and ``[r + 1, r + 1 + size]`` when
    that holds an accepted event; each counts the accepted events inside it."""
    stream: dict[int, int] = defaultdict(lambda: -1)
    accepted: dict[str, list[int]] = defaultdict(list)
    late = 0
    for key, partition, t in events:
        stream[partition] = max(stream[partition], t)
        if stream[partition] < t + 1 + grace:
            accepted[key].append(t)
        else:
            late += 1
    windows: Counter[Window] = Counter()
    for key, times in accepted.items():
        found: dict[int, int] = {}
        for r in set(times):
            found[r - size] = sum(r - size <= x <= r for x in times)
            right = sum(r + 1 <= x <= r + 1 + size for x in times)
            if right:
                found[r + 1] = right
        for start, count in found.items():
            windows[(key, start, start + size, count)] += 1
    return windows, late


def sessions(events: list[Timed], gap: int, grace: int) -> tuple[Counter[Window], int]:
    """Sessions with an inactivity ``gap`` (ms): an event joins (and merges) every session
    of its key with ``start - gap <= t <= end + gap``. A session is closed once the stream
    time reaches ``end + gap + grace``; an event is late when it touches a closed session,
    or touches none and ``t + gap + grace <= stream time``."""
    stream: dict[int, int] = defaultdict(lambda: -1)
    open_: dict[str, list[list[int]]] = defaultdict(list)  # key -> [start, end, count]
    late = 0
    for key, partition, t in events:
        stream[partition] = max(stream[partition], t)
        now = stream[partition]
        touching = [s for s in open_[key] if s[0] - gap <= t <= s[1] + gap]
        if any(s[1] + gap + grace <= now for s in touching) or (
            not touching and t + gap + grace <= now
        ):
            late += 1
            continue
        merged = [min([t] + [s[0] for s in touching]), max([t] + [s[1] for s in touching]),
                  1 + sum(s[2] for s in touching)]  # fmt: skip
        open_[key] = [s for s in open_[key] if s not in touching] + [merged]
    windows: Counter[Window] = Counter(
        (key, start, end, count) for key, found in open_.items() for start, end, count in found
    )
    return windows, late
