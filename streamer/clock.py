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


SYSTEM_CLOCK = Clock()

# The running worker's clock, for code that reads time deep inside tables and timers (the
# worker sets it when it starts; every task it creates inherits it). Outside a worker: real.
current_clock: ContextVar[Clock] = ContextVar("streamer_clock", default=SYSTEM_CLOCK)

__all__ = ["SYSTEM_CLOCK", "Clock", "current_clock"]
