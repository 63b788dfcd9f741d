"""The worker's clock: the one seam through which simulated time enters the runtime.

The worker reads time (commit interval, table ticks) and timers sleep through a
:class:`Clock`; production uses :data:`SYSTEM_CLOCK`, ``streamer.testing`` a simulated one
whose time moves only when a test says so.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar


class Clock:
    """Real time. ``monotonic`` for intervals, ``time`` for wall-clock (epoch seconds)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        await asyncio.sleep(seconds)

    async def sleep_until(self, when: float) -> None:
        """Suspend the calling task until this clock's ``time()`` reaches ``when``."""
        await self.sleep(max(0.0, when - self.time()))


SYSTEM_CLOCK = Clock()


def to_millis(seconds: float) -> int:
    """Epoch seconds to whole milliseconds, *floored*: a time 1 µs before a window boundary
    belongs to the window before it. Rounding (as Kafka clients do for timestamps) would put
    ``...239.9999`` in the next window.

    A float cannot hold most decimal milliseconds exactly (``...200.1`` is stored as
    ``...200.0999999``); flooring its product by 1000 would lose a millisecond. So this is
    the largest ``m`` whose float ``m / 1000`` is not above ``seconds``: exact for every time
    written with millisecond digits, the floor for anything finer.
    """
    millis = round(seconds * 1000)
    if millis / 1000 > seconds:
        millis -= 1
    return millis


# The running worker's clock, for code that reads time deep inside tables and timers (the
# worker sets it when it starts; every task it creates inherits it). Outside a worker: real.
current_clock: ContextVar[Clock] = ContextVar("streamer_clock", default=SYSTEM_CLOCK)

__all__ = ["SYSTEM_CLOCK", "Clock", "current_clock", "to_millis"]
