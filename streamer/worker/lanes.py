"""Lanes: the ordered queues between the pump and agent instances, and the lane task.

Each assigned partition has ``concurrency`` lanes per agent; a record goes to lane
``crc32(key) % concurrency``, so records with the same key always share a lane and keep
their offset order. Each lane runs one instance of the agent function in its own task.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from streamer._context import current_lane
from streamer.agents import Agent, Stream
from streamer.errors import StreamerError
from streamer.events import Event, Headers, Record
from streamer.state.table import TableWrite
from streamer.worker.partition import PartitionState, Pending

log = logging.getLogger("streamer.agent")


class Lane:
    """One ordered lane of one partition for one agent; the agent's stream reads from it.

    Contract: events are handed out in the order they were pushed; an event (or batch)
    handed out is complete when the agent asks for the next one, or when the lane task
    ends after it; outputs staged meanwhile belong to the last event handed out.
    """

    __slots__ = (
        "_on_taken",
        "_waiting",
        "_wakeup",
        "agent",
        "buffer",
        "closing",
        "current",
        "index",
        "state",
    )

    def __init__(
        self,
        state: PartitionState,
        agent: Agent,
        index: int,
        on_taken: Callable[[PartitionState], None],
    ) -> None:
        self.state = state
        self.agent = agent
        self.index = index
        self.buffer: deque[Pending] = deque()
        self.current: list[Pending] = []
        self.closing = False
        self._on_taken = on_taken
        self._wakeup = asyncio.Event()
        self._waiting = False

    @property
    def partition(self) -> int:
        return self.state.partition

    @property
    def label(self) -> str:
        return f"{self.agent.name}@{self.state.label}#{self.index}"

    def push(self, pending: Pending) -> None:
        self.buffer.append(pending)
        if self._waiting:
            self._wakeup.set()

    def close(self) -> None:
        """Stop handing out events: drop what is buffered (those offsets stay uncommitted,
        so they are processed again later) and let the agent finish its current event."""
        self.closing = True
        self.state.buffered -= len(self.buffer)
        self.buffer.clear()
        self._wakeup.set()

    # -- the EventSource protocol (see streamer.agents) ---------------------------------

    async def next_event(self) -> Event:
        if self.current:
            self.complete_current()
        buffer = self.buffer
        while not buffer:
            await self._wait()
        pending = buffer.popleft()
        self.current.append(pending)
        self._taken(1)
        return pending.event

    async def next_batch(self, max_events: int, within: float) -> list[Event]:
        if self.current:
            self.complete_current()
        while not self.buffer:
            await self._wait()
        deadline = asyncio.get_running_loop().time() + within
        while len(self.buffer) < max_events and not self.closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._wait(), remaining)
            except TimeoutError:
                break
        count = min(max_events, len(self.buffer))
        batch = [self.buffer.popleft() for _ in range(count)]
        self.current.extend(batch)
        self._taken(count)
        return [pending.event for pending in batch]

    async def _wait(self) -> None:
        if self.closing:
            raise StopAsyncIteration
        self._wakeup.clear()
        self._waiting = True
        try:
            await self._wakeup.wait()
        finally:
            self._waiting = False

    def _taken(self, count: int) -> None:
        self.state.buffered -= count
        if self.state.paused:
            self._on_taken(self.state)

    # -- completion and staging ------------------------------------------------------------

    def complete_current(self) -> None:
        state = self.state
        for pending in self.current:
            state.complete(pending)
        self.current.clear()

    def drop_current(self) -> None:
        """Complete the current event(s) without their effects (the agent failed on them):
        outputs are dropped and table writes undone, newest first."""
        for pending in reversed(self.current):
            pending.outputs = None
            if pending.writes:
                for part, key, _, had_entry, previous in reversed(pending.writes):
                    part.undo(key, had_entry, previous)
                pending.writes = None
        self.complete_current()

    def stage_write(self, write: TableWrite) -> None:
        """Hold a table write with the event being processed (the Stager protocol)."""
        if not self.current:
            # Undo at once: a write outside any event has nothing to commit with.
            write[0].undo(write[1], write[3], write[4])
            raise StreamerError(
                f"agent {self.agent.name!r} wrote a table while no event was being processed"
            )
        holder = self.current[-1]
        if holder.writes is None:
            holder.writes = []
        holder.writes.append(write)

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Hold an output with the event being processed (the Stager protocol)."""
        if not self.current:
            raise StreamerError(
                f"agent {self.agent.name!r} sent to {topic!r} while no event was being "
                "processed; send from inside `async for event in stream`"
            )
        holder = self.current[-1]
        if holder.outputs is None:
            holder.outputs = []
        holder.outputs.append((topic, key, value, headers))

    def stage_yield(self, item: Any) -> None:
        """Route a value the agent yielded to its sinks (see streamer.events.Record)."""
        if not self.current:
            raise StreamerError(f"agent {self.agent.name!r} yielded before taking an event")
        headers: Headers | None = None
        if isinstance(item, Record):
            key, value, headers = item.key, item.value, item.headers
        elif isinstance(item, tuple) and len(item) == 2:
            key, value = item
        else:
            key, value = self.current[-1].event.key, item
        for sink in self.agent.sinks:
            self.stage(sink.name, sink.encode_key(key), sink.encode_value(value), headers)


async def run_lane(lane: Lane) -> None:
    """Drive one agent instance over one lane until the lane closes.

    An exception from the agent (or from encoding what it yielded) drops the outputs of the
    event in progress, logs the event's coordinates, completes it and starts a fresh
    instance: one bad event never stops the partition or the worker.
    """
    current_lane.set(lane)
    agent = lane.agent
    await lane.state.ready.wait()  # tables of this partition are restored
    while True:
        stream = Stream(lane)
        try:
            if agent.yields:
                async for item in agent.fn(stream):
                    lane.stage_yield(item)
            else:
                await agent.fn(stream)
        except Exception:
            failed = [p.event for p in lane.current]
            where = ", ".join(f"{e.topic}[{e.partition}]@{e.offset}" for e in failed) or "no event"
            log.exception(
                "agent %r failed on %s; skipped (its outputs dropped), agent restarted",
                agent.name,
                where,
            )
            lane.state.stats.errors += 1
            lane.drop_current()
            if lane.closing and not lane.buffer:
                return
            continue
        lane.complete_current()
        if lane.closing:
            return
        log.warning(
            "agent %r returned while its stream was still open; restarting it on %s",
            agent.name,
            lane.state.label,
        )
