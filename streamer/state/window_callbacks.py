"""Running windowed tables' callbacks (``on_close``, ``on_late``) so that what they send
commits exactly when the window's close marker does.

A callback is driven synchronously, in the caller's context, until it returns or first
suspends (``await topic.send(...)`` never suspends inside a worker, so most callbacks never
do). A callback that awaits real I/O is finished in a task, and where that task's sends go
depends on what caused the close:

- **Inside an event** (an event's time closed the window): the task is *held by the event*.
  Its sends are staged with that event, and the event does not complete until the task is
  done: the agent's next ``__anext__`` (or ``take()`` batch) awaits it first
  (``streamer._context.settle``). The close marker, the callback's outputs and the event's
  offset are therefore released, committed or undone together. If the event's attempt fails, the
  task is cancelled and its later sends refused (the retry closes the window again).
- **Outside any event** (an idle tick): the close markers are *deferred* and the outputs
  buffered; when every callback of that tick has finished, markers and outputs enter the
  worker's checkpoint in one synchronous step, so one commit carries both. If the
  partition moved or was rewound meanwhile, both are dropped: the window is still open in
  the committed state, and its owner closes it again.

No path sends around the checkpoint: a callback's sends never fall back to a direct
produce, whatever state the worker is in. The one case left out: an agent that *returns*
(ends its ``async for``) right after an event whose callback is still suspended; the
worker restarts such agents, and the task's later sends are refused with an error.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from streamer._context import Stager, TableWrite, current_lane, hold
from streamer.errors import StreamerError
from streamer.events import Headers

log = logging.getLogger("streamer.windows")

Output = tuple[str, bytes | None, bytes | None, Headers | None]


class EventBound:
    """The Stager of a callback's continuation inside an event: forwards to the lane while
    that event's attempt is the one in progress, refuses otherwise (the attempt failed, and
    its effects are gone; a send now would land in another attempt or event)."""

    __slots__ = ("attempts", "holder", "lane")

    def __init__(self, lane: Stager) -> None:
        self.lane = lane
        current = getattr(lane, "current", None)
        self.holder: object = current[-1] if current else None
        self.attempts: int = getattr(self.holder, "attempts", 0)

    @property
    def partition(self) -> int:
        return self.lane.partition

    def stale(self) -> bool:
        current = getattr(self.lane, "current", None)
        return (
            not current
            or current[-1] is not self.holder
            or getattr(self.holder, "attempts", 0) != self.attempts
        )

    def _check(self) -> None:
        if self.stale():
            raise StreamerError(
                "a window callback resumed after the event that closed the window was "
                "undone or completed; its output is dropped (the window closes again with "
                "the event's retry)"
            )

    def stage_write(self, write: TableWrite) -> None:
        self._check()
        self.lane.stage_write(write)

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        self._check()
        self.lane.stage(topic, key, value, headers)


class OutputBuffer:
    """The Stager of callbacks run by an idle tick: holds their outputs until the tick's
    close markers are written, then hands both to the checkpoint at once."""

    __slots__ = ("outputs",)

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    @property
    def partition(self) -> int:
        return -1

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        self.outputs.append((topic, key, value, headers))

    def stage_write(self, write: TableWrite) -> None:
        raise StreamerError("a window callback run by an idle close cannot write tables")


class CallbackRunner:
    """Runs one windowed table's callbacks (see the module docstring)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.tasks: set[asyncio.Future[Any]] = set()
        self._warned_suspend = False

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> asyncio.Task[None] | None:
        """Run ``fn(*args)`` now, in the current context. Returns the task finishing it when
        it suspended (already held by the event in progress, if any); errors are logged,
        never raised."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                coro = result if inspect.iscoroutine(result) else _await(result)
                return self._step(what, coro)
        except Exception:
            log.exception("%s of windowed table %r failed (ignored)", what, self.table_name)
        return None

    def _step(self, what: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None] | None:
        try:
            yielded = coro.send(None)
        except StopIteration:
            return None
        if not self._warned_suspend:
            self._warned_suspend = True
            log.info(
                "%s of windowed table %r suspends; the event (or idle close) that ran it "
                "completes only when it has finished", what, self.table_name,
            )  # fmt: skip
        context = contextvars.copy_context()
        lane = current_lane.get()
        bound: EventBound | None = None
        if lane is not None and lane.partition >= 0:
            bound = EventBound(lane)
            context.run(current_lane.set, bound)
        task = asyncio.get_running_loop().create_task(_finish(coro, yielded), context=context)
        self.keep(task, what)
        if bound is not None:
            hold(lane, task, bound.stale)
        return task

    def call_outside(
        self, what: str, fn: Callable[..., Any], args: list[tuple[Any, ...]]
    ) -> tuple[OutputBuffer, list[asyncio.Task[None]]]:
        """Run ``fn(*a)`` for every ``a`` of an idle close with their sends buffered; returns
        the buffer and the tasks of those that suspended."""
        buffer = OutputBuffer()
        context = contextvars.copy_context()
        context.run(current_lane.set, buffer)
        tasks = []
        for call_args in args:
            task = context.run(self.call, what, fn, *call_args)
            if task is not None:
                tasks.append(task)
        return buffer, tasks

    def keep(self, task: asyncio.Future[Any], what: str) -> None:
        self.tasks.add(task)

        def done(finished: asyncio.Future[Any]) -> None:
            self.tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s of windowed table %r failed (ignored)", what, self.table_name,
                          exc_info=finished.exception())  # fmt: skip

        task.add_done_callback(done)


async def _await(awaitable: Any) -> None:
    await awaitable


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
    """Resume a coroutine that was stepped by hand, as a Task would: wait for the future it
    yielded, then send it on, until it returns."""
    try:
        while True:
            if yielded is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await asyncio.wait([yielded])
            yielded = coro.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        if yielded is not None:
            yielded.cancel()
        coro.close()
        raise
