"""A simulated clock: time moves only in :meth:`SimulatedClock.advance`."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from streamer.clock import Clock

# Turns of the event loop given to woken sleepers before the next one is due: enough for a
# timer to run its (non-blocking) body and go back to sleep.
_SETTLE_TURNS = 20


class SimulatedClock(Clock):
    """Starts at the real wall-clock time (so record timestamps look ordinary) and stands
    still until :meth:`advance`. ``sleep`` waits for simulated time, never for real time."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._origin = self._now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they slept

    def monotonic(self) -> float:
        return self._now - self._origin

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def sleep_until(self, when: float) -> None:
        """Wake exactly when time reaches ``when`` (no rounding through a duration)."""
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at each sleeper's due time to wake it
        and let the loop run (so a timer that re-arms inside the span fires again)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
