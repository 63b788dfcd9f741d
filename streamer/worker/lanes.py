"""Lanes: the ordered queues between the pump and agent instances (the task that drives an
agent over its lane is in ``streamer.worker.lane_task``).

Each assigned partition has ``concurrency`` lanes per agent; a record goes to lane
``crc32(key) % concurrency``, so records with the same key always share a lane and keep
their offset order. Each lane runs one instance of the agent function in its own task.

(About 530 lines: a lane's hand-out, completion and failure handling are one state
machine on the hot path, read in one place.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, ClassVar

from streamer._context import TableWrite, current_event
from streamer.agents import Agent
from streamer.delays import DELIVER_AT, due_of, split_headers
from streamer.errors import SerializationError, StreamerError
from streamer.events import Event, Headers, Record
from streamer.ratelimit import KeyBuckets
from streamer.replies import CORRELATION_ID, REPLY_CLIENT, Reply, reply_address
from streamer.worker.dead_letters import dead_letter
from streamer.worker.lane_context import LaneContext
from streamer.worker.partition import Effects, PartitionState, Pending
from streamer.worker.probes import IDLE_PROBE, LaneProbe

log = logging.getLogger("streamer.agent")

RETRY_REASON = "streamer.retry.reason"  # why a record was sent to a retry topic
BATCHES_BUFFERED = 10  # take(n) batches a lane may hold before its partition pauses


class Lane:
    """One ordered lane of one partition for one agent; the agent's stream reads from it.

    Contract: events are handed out in the order they were pushed; an event (or batch)
    handed out is complete when the agent asks for the next one, or when the lane task
    ends after it; outputs staged meanwhile belong to the last event handed out.
    """

    __slots__ = (
        "_held",
        "_holder",
        "_holder_effects",
        "_keys",
        "_throttled",
        "_waiting",
        "_wakeup",
        "agent",
        "buffer",
        "closing",
        "ctx",
        "current",
        "due_at",
        "index",
        "partition",
        "probe",
        "refused",
        "served",
        "state",
    )

    # The pump may append to ``buffer`` directly (see Route.appendable).
    appendable: ClassVar[bool] = True

    def __init__(
        self,
        state: PartitionState,
        agent: Agent,
        index: int,
        ctx: LaneContext,
        probe: LaneProbe = IDLE_PROBE,
    ) -> None:
        self.state = state
        # An attribute, not a property: tables read it on every access (the Stager protocol).
        self.partition = state.partition
        self.agent = agent
        self.index = index
        self.ctx = ctx
        self.buffer: deque[Pending] = deque()
        self.current: list[Pending] = []
        self.closing = False
        self._wakeup = asyncio.Event()
        self._waiting = False
        self.probe = probe  # its agent's metrics (WorkerMetrics.lane_probe), inert if off
        self.refused = ctx.refused  # this agent's records whose outputs the broker refused
        self.served = 0  # events handed out: an agent that restarts without progress fails
        # The effects of the event being processed, cached for the staging hot path.
        self._holder: Pending | None = None
        self._holder_effects: Effects | None = None
        # Rate limits (streamer.ratelimit): this lane's per-key buckets, and the sleep of a
        # throttled hand-out (close() cuts it short).
        rate = agent.rate_limit_per_key
        self._keys = KeyBuckets(rate, ctx.clock.monotonic) if rate is not None else None
        self._throttled: asyncio.Future[None] | None = None
        # Topics whose records wait here until due (streamer.delays): delay, retry topics.
        self._held = agent.held or None
        self.due_at: float | None = None  # holding a delayed record until then

    @property
    def label(self) -> str:
        return f"{self.agent.name}@{self.state.label}#{self.index}"

    def push(self, pending: Pending) -> None:
        self.buffer.append(pending)
        if self._waiting:
            self._wakeup.set()

    def wake(self) -> None:
        """Records were appended to ``buffer`` directly (the pump's fast path): wake the
        agent if it waits for them."""
        if self._waiting and self.buffer:
            self._wakeup.set()

    def close(self) -> None:
        """Stop handing out events: drop what is buffered (those offsets stay uncommitted,
        so they are processed again later) and let the agent finish its current event."""
        self.closing = True
        self.state.buffered -= len(self.buffer)
        self.buffer.clear()
        self._wakeup.set()
        if self._throttled is not None:
            self._throttled.cancel()

    # -- the EventSource protocol (see streamer.agents) ---------------------------------

    async def next_event(self) -> Event:
        current = self.current
        if current:
            if len(current) == 1 and not self.probe.started:
                # complete_current() and PartitionState.complete() inlined: once per event.
                done = current.pop()
                self._holder = None
                done.remaining -= 1
                if done.remaining <= 0:
                    done.done = True
                    state = self.state
                    if state.inflight and state.inflight[0] is done:
                        state.advance()
            else:
                self.complete_current()
        buffer = self.buffer
        while True:
            while not buffer:
                await self._wait()
            pending = buffer.popleft()
            probe = self.probe  # _taken(1) inlined
            probe.taken += 1
            if probe.taken >= probe.due:
                probe.start()
            self.served += 1
            state = self.state
            state.buffered -= 1
            if state.paused:
                self.ctx.on_taken(state)
            if not self.refused or await self._screen(pending):
                break
        if self._held is not None and pending.event.topic in self._held:
            await self._hold(pending)
        if self.ctx.bucket is not None or self._keys is not None:
            await self._throttle(pending)
        self.current.append(pending)
        return pending.event

    async def next_batch(self, max_events: int, within: float) -> list[Event]:
        if self.current:
            self.complete_current()
        state = self.state
        if state.pause_at < BATCHES_BUFFERED * max_events:
            # Room for a few batches: else the partition pauses every batch, and a paused
            # partition's prefetched records are dropped by the client and fetched again
            # (measured: the loop then idles two thirds of the time). Still a bound.
            state.pause_at = BATCHES_BUFFERED * max_events
        while not self.buffer:
            await self._wait()
        # A record whose output was refused is retried, or settled, on its own.
        while self.refused and self._was_refused(self.buffer[0]):
            head = self.buffer.popleft()
            self._taken(1)
            if await self._screen(head):
                self.current.append(head)
                return [head.event]
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
        if self.refused:  # the batch ends before the next refused record
            count = next((i for i in range(1, count) if self._was_refused(self.buffer[i])), count)
        popleft = self.buffer.popleft
        batch = [popleft() for _ in range(count)]
        self._taken(count)
        held, throttled = self._held, self.ctx.bucket is not None or self._keys is not None
        if held is not None or throttled:  # per-record waits only where they can apply
            for pending in batch:
                if held is not None and pending.event.topic in held:
                    await self._hold(pending)
                if throttled:
                    await self._throttle(pending)
        self.current.extend(batch)
        return [pending.event for pending in batch]

    async def _throttle(self, pending: Pending) -> None:
        """Wait for ``pending``'s tokens (the agent's and its key's). The event is taken
        from the buffer but not yet handed out: when the lane closes meanwhile it is not
        handed out at all (it stays uncommitted, processed again later)."""
        wait = 0.0
        if self.ctx.bucket is not None:
            wait = self.ctx.bucket.reserve()
        if self._keys is not None:
            wait = max(wait, self._keys.reserve(pending.message.key()))
        if wait > 0 and not self.closing:
            self.ctx.rate_limited(self.agent.name, wait)
            state = self.state
            state.holding += 1  # waiting for time, like a delayed record: not stuck
            self.due_at = self.ctx.clock.time() + wait
            try:
                await self._sleep(wait)
            finally:
                state.holding -= 1
                self.due_at = None
        if self.closing:
            raise StopAsyncIteration

    async def _hold(self, pending: Pending) -> None:
        """Wait until a delayed record is due (its ``streamer.deliver-at`` header, on the
        worker's clock). Later records of the lane wait behind it, and once the lane's
        buffer is full the partition pauses: nothing polls meanwhile. Like a throttled
        hand-out, it is cut short when the lane closes (the record stays uncommitted)."""
        due = due_of(pending.event.headers)
        if due is not None:
            wait = due - self.ctx.clock.time()
            if wait > 0 and not self.closing:
                state = self.state
                state.holding += 1  # not a stuck agent: no stall warnings
                self.due_at = due
                try:
                    await self._sleep(wait, until=due)
                finally:
                    state.holding -= 1
                    self.due_at = None
        if self.closing:
            raise StopAsyncIteration

    async def _sleep(self, seconds: float, until: float | None = None) -> None:
        """Sleep on the worker's clock (``seconds``, or until its time is ``until``);
        :meth:`close` cuts it short."""
        clock = self.ctx.clock
        sleep = clock.sleep(seconds) if until is None else clock.sleep_until(until)
        sleeper = self._throttled = asyncio.ensure_future(sleep)
        try:
            await asyncio.wait((sleeper,))  # close() cancels it; we are not cancelled
        finally:
            sleeper.cancel()
            self._throttled = None

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
        self.served += count
        self.state.buffered -= count
        if self.state.paused:
            self.ctx.on_taken(self.state)

    # -- completion and staging ------------------------------------------------------------

    def complete_current(self) -> None:
        if self.probe.started:  # a sampled hand-out completes: observe its latency
            self.probe.stop()
        # PartitionState.complete() inlined, and the prefix advanced once for the whole
        # batch of a take(): per-record work here is two attribute updates.
        current = self.current
        for pending in current:
            pending.remaining -= 1
            if pending.remaining <= 0:
                pending.done = True
        inflight = self.state.inflight
        if inflight and inflight[0].done:
            self.state.advance()
        current.clear()
        self._holder = None

    def _undo_current(self) -> None:
        """Drop this agent's outputs and table writes for the current event(s), newest
        first; other agents reading the same records keep theirs."""
        name = self.agent.name
        for pending in reversed(self.current):
            pending.undo(name)
        self._holder = None

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
        for pending in self.current:
            self._dead_letter(pending, error)
        self.complete_current()

    def retry_later_current(self, topic: str, delay: float, error: BaseException) -> None:
        """Complete the current event(s) with only their original records, sent to the
        retry ``topic`` to be due ``delay`` seconds from now (non-blocking retries)."""
        self._undo_current()
        due = str(int((self.ctx.clock.time() + delay) * 1000)).encode()
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:500].encode()
        name = self.agent.name
        for pending in self.current:
            _, headers = split_headers(pending.event.headers)
            headers = [
                *(h for h in headers if h[0] != RETRY_REASON),
                (DELIVER_AT, due),
                (RETRY_REASON, reason),
            ]
            message = pending.message
            effects = pending.effects_of(name)
            effects.outputs = [(topic, message.key(), message.value(), headers)]
        self.complete_current()

    def _dead_letter(self, pending: Pending, error: BaseException) -> None:
        name = self.agent.name
        effects = pending.effects_of(name)
        effects.dead_letter = True
        effects.outputs = [
            dead_letter(
                self.ctx.dead_letter_topic,
                pending.message,
                error,
                agent=name,
                attempts=pending.failed_attempts(name),
            )
        ]

    def _effects(self) -> Effects:
        """This agent's effects for the event being processed (the last handed out)."""
        holder = self.current[-1]
        effects = self._holder_effects
        if holder is not self._holder or effects is None:
            self._holder = holder
            effects = self._holder_effects = holder.effects_of(self.agent.name)
        return effects

    def stage_write(self, write: TableWrite) -> None:
        """Hold a table write with the event being processed (the Stager protocol)."""
        if not self.current:
            # Undo at once: a write outside any event has nothing to commit with.
            write.undo()
            raise StreamerError(
                f"agent {self.agent.name!r} wrote a table while no event was being processed"
            )
        effects = self._holder_effects  # _effects() inlined: once per table write
        if self.current[-1] is not self._holder or effects is None:
            effects = self._effects()
        if effects.writes is None:
            effects.writes = [write]
        else:
            effects.writes.append(write)

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Hold an output with the event being processed (the Stager protocol)."""
        if not self.current:
            raise StreamerError(
                f"agent {self.agent.name!r} sent to {topic!r} while no event was being "
                "processed; send from inside `async for event in stream`"
            )
        self._effects().add_output((topic, key, value, headers))

    def stage_yield(self, item: Any) -> None:
        """Route a value the agent yielded to its sinks (see streamer.events.Record)."""
        if not self.current:
            raise StreamerError(f"agent {self.agent.name!r} yielded before taking an event")
        headers: Headers | None = None
        if type(item) is tuple and len(item) == 2:  # the common shapes first: no isinstance
            key, value = item
        elif isinstance(item, Reply):
            self._stage_reply(item)
            return
        elif isinstance(item, Record):
            key, value, headers = item.key, item.value, item.headers
        elif isinstance(item, tuple) and len(item) == 2:
            key, value = item
        else:
            key, value = self._yielding_event().key, item
        holder = self.current[-1]  # _effects() inlined: once per output
        effects = self._holder_effects
        if holder is not self._holder or effects is None:
            effects = holder.effects_of(self.agent.name)  # _effects() without its call
            self._holder, self._holder_effects = holder, effects
        for sink in self.agent.sinks:
            try:  # the serdes directly; the topic's wrappers only to word a failure
                output = (
                    sink.name,
                    sink.key_serde.serialize(key),
                    sink.value_serde.serialize(value),
                    headers,
                )
            except SerializationError:
                output = (sink.name, sink.encode_key(key), sink.encode_value(value), headers)
            outputs = effects.outputs  # add_output() inlined: once per output
            if outputs:
                outputs.append(output)
            else:
                effects.outputs = [output]

    def _yielding_event(self) -> Event:
        """The event a bare ``yield value`` answers: the one handed out, or, in a ``take()``
        batch, the one the ``for event in batch`` loop is at (``Batch`` records it). A
        recorded event outside the batch's offsets (a stale one, or a batch indexed rather
        than iterated) falls back to the batch's last event."""
        current = self.current
        last = current[-1].event
        if len(current) == 1:
            return last
        event = current_event.get()
        if event is None or not current[0].offset <= event.offset <= last.offset:
            return last
        return event

    def _stage_reply(self, reply: Reply) -> None:
        """Stage the reply to the request being processed, like any output: it reaches the
        asker's reply topic with the event (under exactly-once, in its transaction). In
        a ``take()`` batch it answers the event the ``for event in batch`` loop is at."""
        event = current_event.get()
        if event is None or not any(p.event is event for p in self.current):
            event = self.current[-1].event
        address = reply_address(event.headers)
        if address is None:
            log.warning(
                "agent %r yielded a Reply for %s[%d]@%d, which is not a request (no reply "
                "address); dropped", self.agent.name, event.topic, event.partition, event.offset,
            )  # fmt: skip
            return
        topic, cid, client = address
        headers: Headers = [*(reply.headers or []), (CORRELATION_ID, cid), (REPLY_CLIENT, client)]
        value = self.agent.reply_serde.serialize(reply.value)
        # Keyed by the asking client: its replies stay in order.
        self._effects().add_output((topic, client, value, headers))

    # -- outputs the broker refused (DESIGN §2 rule 11) ---------------------------------------

    def _was_refused(self, pending: Pending) -> bool:
        return (self.state.topic, self.state.partition, pending.offset) in self.refused

    async def _screen(self, pending: Pending) -> bool:
        """Apply the error policy to a record one of whose outputs the broker refused (the
        checkpoint failed and every partition was rewound). Returns True to hand it to the
        agent again (a retry, after the policy's backoff), False when it was settled here:
        dead-lettered or skipped once retries are exhausted. Raises StopAsyncIteration when
        the policy says stop (the record stays uncommitted). From then on its outputs are
        produced alone; a first refusal of outputs that shared a batch (attempt 0: another
        record's may have been the cause) is handed out again at once, uncounted."""
        refusal = self.refused.get((self.state.topic, self.state.partition, pending.offset))
        if refusal is None:
            return True
        name, policy = self.agent.name, self.ctx.policy
        attempts = refusal.attempts
        pending.alone = True  # its outputs go in produce requests of their own now
        if pending.failed_attempts(name) < attempts:
            pending.attempts = {**(pending.attempts or {}), name: attempts}
        where = f"{self.state.label}@{pending.offset}"
        if attempts == 0:  # a suspicion: its outputs shared a refused batch (see _blame)
            log.info(
                "agent %r: the broker refused a batch holding an output of %s: %s; "
                "processing it again with its outputs sent alone", name, where, refusal,
            )  # fmt: skip
            return True
        if attempts <= policy.retries:
            delay = policy.delay(attempts)
            log.warning(
                "agent %r: the broker refused an output of %s (attempt %d of %d): %s; "
                "processing it again in %.2fs", name, where, attempts, policy.retries + 1,
                refusal, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            return True
        if policy.on_exhausted == "stop":
            log.error("agent %r: the broker refused an output of %s %d time(s): %s; stopping "
                      "the worker", name, where, attempts, refusal)  # fmt: skip
            self.buffer.appendleft(pending)
            self.state.buffered += 1
            self.close()  # left uncommitted: processed again after a restart
            self.ctx.on_fatal(refusal)
            raise StopAsyncIteration
        if policy.on_exhausted == "dead_letter":
            log.error("agent %r: the broker refused an output of %s %d time(s): %s; sent to %s",
                      name, where, attempts, refusal, self.ctx.dead_letter_topic)  # fmt: skip
            self._dead_letter(pending, refusal)
            self.ctx.dead_lettered(name, type(refusal).__name__)
        else:
            log.error("agent %r: the broker refused an output of %s %d time(s): %s; skipped",
                      name, where, attempts, refusal)  # fmt: skip
        self.state.stats.errors += 1
        self.state.complete(pending)
        return False
