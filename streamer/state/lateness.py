"""Late events of a windowed table: counted per partition, exported, and logged so a user
sees them without looking for them.

An event is late when every window containing its time is past its grace at the partition's
stream time: it is not applied. How late it is decides the fix, so the log says it: the
event was ``behind`` seconds older than the stream time, and the grace that would have
kept it is ``behind - size`` (tumbling; the newest window containing it ended that long
before the stream time). See docs/windows.md for sizing grace.
"""

from __future__ import annotations

import logging

log = logging.getLogger("streamer.windows")

LOG_EVERY = 10.0  # seconds between two late-event warnings of one table (wall clock)


class LateEvents:
    """Late-event bookkeeping of one windowed table on this process (loop thread only).

    ``by_partition`` counts late events per table partition since the process started
    (the Prometheus counter follows it; the count stored with the partition's window
    metadata survives restarts and is what ``streamer tables`` shows). Each late event is
    counted once even when it is processed twice: after a failed checkpoint rewinds a
    partition, the redone events bring its stored count back up to where the dropped
    attempt had taken it, and only a count beyond the highest this process saw for the
    partition is new (:meth:`attached` records what a partition brings when it arrives).
    Warnings are rate-limited to one per :data:`LOG_EVERY` seconds per table, each with the
    count since the previous one and the largest lateness seen.
    """

    __slots__ = ("_first_warned", "_high", "_last_log", "_max_behind", "_max_needed",
                 "_partitions", "_unreported", "by_partition", "table", "total")  # fmt: skip

    def __init__(self, table: str) -> None:
        self.table = table
        self.total = 0
        self.by_partition: dict[int, int] = {}
        # The highest stored late count of each partition this process has seen.
        self._high: dict[int, int] = {}
        self._unreported = 0
        self._max_behind = 0
        self._max_needed = 0
        self._partitions: set[int] = set()
        self._last_log = float("-inf")
        self._first_warned = False

    def attached(self, partition: int, stored: int) -> None:
        """``partition`` was (re)built from its store, which counts ``stored`` late events
        ever: those counted elsewhere, or before this process, are not this process's."""
        self._high[partition] = max(self._high.get(partition, 0), stored)

    def count(
        self, partition: int, stored: int, behind_ms: int, needed_grace_ms: int, now: float
    ) -> None:
        """A late event of ``partition`` took its stored count to ``stored``: it was
        ``behind_ms`` older than the stream time; a grace of ``needed_grace_ms`` would have
        applied it. Counted unless a rewound attempt already counted it."""
        if stored <= self._high.get(partition, 0):
            return  # redone after a rewind: counted by the attempt that was dropped
        self._high[partition] = stored
        self.total += 1
        self.by_partition[partition] = self.by_partition.get(partition, 0) + 1
        self._unreported += 1
        self._partitions.add(partition)
        self._max_behind = max(self._max_behind, behind_ms)
        self._max_needed = max(self._max_needed, needed_grace_ms)
        self.report(now)

    def report(self, now: float) -> None:
        """Log what was counted since the last warning, if the rate limit allows (called on
        each late event and by the table's tick, so a burst's tail is reported too)."""
        if not self._unreported or now - self._last_log < LOG_EVERY:
            return
        self._last_log = now
        parts = ",".join(map(str, sorted(self._partitions)))
        log.warning(
            "windowed table %r dropped %d late event(s) (partitions %s; up to %.3fs behind "
            "stream time, a grace of %.3fs would have kept them)%s",
            self.table, self._unreported, parts, self._max_behind / 1000,
            self._max_needed / 1000,
            "" if self._first_warned else
            "; raise grace above the longest delay or stop you expect (see docs/windows.md)",
        )  # fmt: skip
        self._first_warned = True
        self._unreported = 0
        self._max_behind = self._max_needed = 0
        self._partitions.clear()
