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
from dataclasses import dataclass
from typing import Any

from streamer._context import current_lane
from streamer.agents import Agent, Stream
from streamer.errors import StreamerError
from streamer.events import Event, Headers, Record
from streamer.metrics import IDLE_PROBE, LaneProbe
from streamer.policy import ErrorPolicy
from streamer.state.table import TableWrite
from streamer.worker.dead_letters import dead_letter
from streamer.worker.partition import PartitionState, Pending

log = logging.getLogger("streamer.agent")


class Lane:
    """One ordered lane of one partition for one agent; the agent's stream reads from it.

    Contract: events are handed out in the order they were pushed; an event (or batch)
    handed out is complete when the agent asks for the next one, or when the lane task
    ends after it; outputs staged meanwhile belong to the last event handed out.
    """

    __slots__ = (
        "_waiting",
        "_wakeup",
        "agent",
        "buffer",
        "closing",
        "ctx",
        "current",
        "index",
        "probe",
        "state",
    )

    def __init__(self, state: PartitionState, agent: Agent, index: int, ctx: LaneContext) -> None:
        self.state = state
        self.agent = agent
        self.index = index
        self.ctx = ctx
        self.buffer: deque[Pending] = deque()
        self.current: list[Pending] = []
        self.closing = False
        self._wakeup = asyncio.Event()
        self._waiting = False
        self.probe: LaneProbe = IDLE_PROBE  # WorkerMetrics.assigned() binds a live one

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
        probe = self.probe  # metrics, inline: a count and a compare per hand-out
        probe.taken += count
        if probe.taken >= probe.due:
            probe.start()
        self.state.buffered -= count
        if self.state.paused:
            self.ctx.on_taken(self.state)

    # -- completion and staging ------------------------------------------------------------

    def complete_current(self) -> None:
        if self.probe.started:  # a sampled hand-out completes: observe its latency
            self.probe.stop()
        state = self.state
        for pending in self.current:
            state.complete(pending)
        self.current.clear()

    def _undo_current(self) -> None:
        """Drop the outputs and undo the table writes of the current event(s), newest first."""
        for pending in reversed(self.current):
            pending.outputs = None
            if pending.writes:
                for part, key, _, had_entry, previous in reversed(pending.writes):
                    part.undo(key, had_entry, previous)
                pending.writes = None

    def drop_current(self) -> None:
        """Complete the current event(s) without their effects (the agent failed on them)."""
        self._undo_current()
        self.complete_current()

    def retry_current(self) -> None:
        """Put the current event(s) back at the head of the lane, effects undone, so the
        next agent instance sees them first (later events of the lane keep waiting)."""
        self._undo_current()
        self.buffer.extendleft(reversed(self.current))
        self.state.buffered += len(self.current)
        self.current.clear()

    def dead_letter_current(self, error: BaseException) -> None:
        """Complete the current event(s) with only their dead-letter records as outputs."""
        self._undo_current()
        topic = self.ctx.dead_letter_topic
        for pending in self.current:
            pending.outputs = [
                dead_letter(
                    topic,
                    pending.message,
                    error,
                    agent=self.agent.name,
                    attempts=pending.attempts,
                )
            ]
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


@dataclass(frozen=True)
class LaneContext:
    """What every lane of one agent shares: its error policy and the worker's callbacks."""

    policy: ErrorPolicy
    dead_letter_topic: str
    on_taken: Callable[[PartitionState], None]  # a paused partition's lane drained a bit
    on_fatal: Callable[[BaseException], None]  # the policy says: stop the worker
    dead_lettered: Callable[[str, str], None]  # counts (agent, reason) for the metrics


async def run_lane(lane: Lane) -> None:
    """Drive one agent instance over one lane until the lane closes.

    When the agent raises (or what it yielded cannot be encoded), the failed attempt's
    effects are dropped and its :class:`ErrorPolicy` decides: retry the same event(s) after
    a backoff in a fresh instance, or, once retries are exhausted, dead-letter, skip, or stop
    the worker. One bad event never stalls the partition silently.
    """
    current_lane.set(lane)
    agent = lane.agent
    policy = lane.ctx.policy
    await lane.state.ready.wait()  # tables of this partition are restored
    while True:
        stream = Stream(lane)
        try:
            if agent.yields:
                async for item in agent.fn(stream):
                    lane.stage_yield(item)
            else:
                await agent.fn(stream)
        except Exception as error:
            if not lane.current:
                log.exception("agent %r failed outside any event; restarting it", agent.name)
                await asyncio.sleep(policy.delay(1))
                continue
            lane.state.stats.errors += 1
            attempts = max(pending.attempts for pending in lane.current) + 1
            for pending in lane.current:
                pending.attempts = attempts
            where = ", ".join(
                f"{p.event.topic}[{p.event.partition}]@{p.event.offset}" for p in lane.current
            )
            if attempts <= policy.retries and not lane.closing:
                delay = policy.delay(attempts)
                log.warning(
                    "agent %r failed on %s (attempt %d of %d): %r; retrying in %.2fs",
                    agent.name, where, attempts, policy.retries + 1, error, delay,
                )  # fmt: skip
                lane.retry_current()
                await asyncio.sleep(delay)
                continue
            if policy.on_exhausted == "stop" and not lane.closing:
                log.error("agent %r failed on %s %d time(s); stopping the worker", agent.name,
                          where, attempts, exc_info=error)  # fmt: skip
                lane.retry_current()  # left uncommitted: processed again after a restart
                lane.ctx.on_fatal(error)
                return
            if policy.on_exhausted == "dead_letter":
                log.error("agent %r failed on %s %d time(s): %r; sent to %s", agent.name, where,
                          attempts, error, lane.ctx.dead_letter_topic)  # fmt: skip
                lane.dead_letter_current(error)
                lane.ctx.dead_lettered(agent.name, type(error).__name__)
            else:
                log.error("agent %r failed on %s %d time(s); skipped", agent.name, where,
                          attempts, exc_info=error)  # fmt: skip
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
