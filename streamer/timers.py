"""Timers: functions a worker runs at an interval or on a cron schedule.

A timer's exceptions are logged with their traceback and the timer runs again at its next
time: a failing timer never stops the worker, nor stops silently. Records a timer sends go
through the worker's own producer and checkpoint (in the open transaction under
exactly-once), never through a side producer. ``on_leader=True`` runs it on one worker of
the group only: the one that owns partition 0 of the app's first source topic.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from streamer.clock import current_clock
from streamer.errors import ConfigError

TimerFn = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Timer:
    """A declared timer: ``interval`` seconds apart, or on the ``cron`` schedule."""

    fn: TimerFn
    name: str
    interval: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    on_leader: bool = False

    def next_delay(self) -> float:
        """Seconds from now until the timer is due next."""
        if self.interval is not None:
            return self.interval
        assert self.cron is not None
        clock = current_clock.get()  # the worker's: simulated under streamer.testing
        now = datetime.fromtimestamp(clock.time(), ZoneInfo(self.timezone))
        due: datetime = croniter(self.cron, now).get_next(datetime)
        return max(0.0, due.timestamp() - clock.time())


def make_timer(
    fn: TimerFn,
    *,
    name: str | None,
    interval: float | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
    on_leader: bool = False,
) -> Timer:
    """Validate a timer declaration; ConfigError says what to fix."""
    label: str = name or getattr(fn, "__name__", None) or repr(fn)
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(f"timer {label!r} must be an `async def` taking no arguments")
    if interval is not None and interval <= 0:
        raise ConfigError(f"timer {label!r}: interval must be > 0 seconds, got {interval}")
    if cron is not None:
        if not croniter.is_valid(cron):
            raise ConfigError(f"timer {label!r}: {cron!r} is not a cron expression")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timer {label!r}: unknown timezone {timezone!r}") from None
    return Timer(fn, label, interval, cron, timezone, on_leader)
