"""Running timers inside a worker, and the stager their sends go through."""

from __future__ import annotations

import logging
from collections.abc import Callable

from streamer._context import TableWrite
from streamer.clock import SYSTEM_CLOCK, Clock
from streamer.errors import StreamerError
from streamer.events import Headers
from streamer.timers import Timer
from streamer.worker.partition import Output

log = logging.getLogger("streamer.timers")


class WorkerStager:
    """The Stager for code that runs in a worker outside any event (timers): its records
    are released at once into the worker's producer, so the next checkpoint makes them
    durable (in the open transaction under exactly-once). Tables cannot be written here."""

    def __init__(self, release: Callable[[Output], None]) -> None:
        self._release = release

    @property
    def partition(self) -> int:
        return -1  # outside any event: table reads search every owned partition

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        self._release((topic, key, value, headers))

    def stage_write(self, write: TableWrite) -> None:
        raise StreamerError("tables are written by agents, inside an event")


async def run_timer(
    timer: Timer, is_leader: Callable[[], bool], clock: Clock = SYSTEM_CLOCK
) -> None:
    """Run ``timer`` at its times (on ``clock``) until cancelled; errors are logged, never
    fatal."""
    while True:
        await clock.sleep(timer.next_delay())
        if timer.on_leader and not is_leader():
            continue
        try:
            await timer.fn()
        except Exception:
            log.exception("timer %r failed; it runs again at its next time", timer.name)
