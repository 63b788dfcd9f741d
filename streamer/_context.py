"""The ambient processing context: which lane (and so which event) is running now.

The worker sets ``current_lane`` in every lane task, so ``Topic.send`` called from agent
code stages its record with the event being processed (DESIGN §2 rule 2) without the user
passing anything around. Outside a worker the variable is unset and sends go out directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import NamedTuple, Protocol

from streamer.events import Event, Headers


class WriteTarget(Protocol):
    """Where a staged table write lands: a table partition on this worker."""

    def release(self, key: bytes, value: bytes | None) -> None:
        """The write's event completed: ``value`` joins the next checkpoint."""
        ...

    def undo(self, key: bytes, had_entry: bool, previous: bytes | None) -> None:
        """The write's event failed: restore what reads saw before it."""
        ...


class TableWrite(NamedTuple):
    """One table write staged with the event in progress: released when the event
    completes, undone (newest first) when it fails. A tuple underneath on purpose: one is
    built per write on the hot path."""

    target: WriteTarget
    key: bytes
    value: bytes | None
    had_entry: bool  # did the overlay hold the key before this write
    previous: bytes | None  # the overlay's value before it (meaningful when had_entry)

    def release(self) -> None:
        self.target.release(self.key, self.value)

    def undo(self) -> None:
        self.target.undo(self.key, self.had_entry, self.previous)


class Stager(Protocol):
    """Something that holds outputs and table writes with the event in progress until it
    completes (a worker lane)."""

    @property
    def partition(self) -> int:
        """The source partition of the event in progress (= the table partition); -1 when
        the code runs outside any event (a timer)."""
        ...

    def stage_write(self, write: TableWrite) -> None: ...

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None: ...


current_lane: ContextVar[Stager | None] = ContextVar("streamer_current_lane", default=None)

current_event: ContextVar[Event | None] = ContextVar("streamer_current_event", default=None)
"""Inside a ``take()`` batch, the event the agent's ``for event in batch`` loop is at: a
windowed table written for a batch of several events uses that event's own time."""


# lane -> [(task, is it stale?)]: continuations of window callbacks that the lane's event in
# progress waits for (see streamer.state.window_callbacks). The stream tests it for
# emptiness on every event (the hot path): a dict check, no call.
held: dict[object, list[tuple[asyncio.Task[None], Callable[[], bool]]]] = {}


def hold(lane: object, task: asyncio.Task[None], stale: Callable[[], bool]) -> None:
    """Make the event in progress in ``lane`` wait for ``task`` before it completes.
    ``stale()`` says the attempt that started it failed: then it is cancelled instead."""
    held.setdefault(lane, []).append((task, stale))


async def settle(lane: object) -> None:
    """Finish the continuations the event in progress in ``lane`` holds (the stream calls
    this before asking the lane for its next event, so the event completes only after
    them). Those of a failed attempt are cancelled instead. If the caller is cancelled
    (shutdown), they are cancelled too: the event then stays incomplete, uncommitted."""
    tasks = held.pop(lane, None)
    if not tasks:
        return
    live = []
    for task, stale in tasks:
        if stale():
            task.cancel()
        else:
            live.append(task)
    if not live:
        return
    try:
        # Their errors are logged where they were started; they never fail the event.
        await asyncio.gather(*live, return_exceptions=True)
    except asyncio.CancelledError:
        for task in live:
            task.cancel()
        raise
