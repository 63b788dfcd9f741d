"""The lane task: one agent instance driven over one lane, and its error policy.

Split from ``streamer.worker.lanes`` (the lane's queue and staging) to keep both small.
"""

from __future__ import annotations

import asyncio
import logging

from streamer._context import current_lane
from streamer.agents import Stream
from streamer.errors import AgentFailed
from streamer.worker.lanes import Lane

log = logging.getLogger("streamer.agent")


async def run_lane(lane: Lane) -> None:
    """Drive one agent instance over one lane until the lane closes.

    When the agent raises (or what it yielded cannot be encoded), the failed attempt's
    effects are dropped and its :class:`ErrorPolicy` decides: retry the same event(s) after
    a backoff in a fresh instance, or, once retries are exhausted, dead-letter, skip, or stop
    the worker. One bad event never stalls the partition silently. The policy is the same
    while the worker drains for shutdown: a failure is retried (the shutdown timeout bounds
    it), never skipped or dead-lettered early.

    An agent that ends (returns, or raises outside any event) while its stream is open is
    restarted after a backoff; after ``MAX_RESTARTS`` restarts in a row with no event
    handed out, the worker stops with one line naming the agent.
    """
    current_lane.set(lane)
    agent = lane.agent
    policy = lane.ctx.policy
    await lane.state.ready.wait()  # tables of this partition are restored
    restarts = 0
    served = lane.served
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
                restarts = restarts + 1 if lane.served == served else 1
                served = lane.served
                if restarts > MAX_RESTARTS:
                    lane.ctx.on_fatal(_restart_loop(agent.name, restarts - 1, error))
                    return
                log.exception("agent %r failed outside any event; restarting it", agent.name)
                await asyncio.sleep(policy.delay(restarts))
                continue
            retry_in = _handle_failure(lane, error)
            if retry_in is not None:
                await asyncio.sleep(retry_in)
            elif lane.closing and not lane.buffer:
                return
            continue
        lane.complete_current()
        if lane.closing:
            return
        restarts = restarts + 1 if lane.served == served else 1
        served = lane.served
        if restarts > MAX_RESTARTS:
            lane.ctx.on_fatal(_restart_loop(agent.name, restarts - 1, None))
            return
        log.warning(
            "agent %r returned while its stream was still open; restarting it on %s",
            agent.name,
            lane.state.label,
        )
        await asyncio.sleep(policy.delay(restarts))


MAX_RESTARTS = 5  # restarts in a row, with no event handed out, before the worker stops


def _restart_loop(agent: str, restarts: int, error: BaseException | None) -> AgentFailed:
    how = f"raised {type(error).__name__}: {error}" if error is not None else "returned"
    return AgentFailed(
        f"agent {agent!r} {how} {restarts} times in a row without taking an event; an agent "
        "must keep reading its stream (`async for event in stream:`)"
    )


def _handle_failure(lane: Lane, error: Exception) -> float | None:
    """The agent failed on the current event(s): count the attempt and apply the policy.
    Returns the seconds to wait before the retry, or None when the events were settled."""
    agent, policy = lane.agent, lane.ctx.policy
    lane.state.stats.errors += 1
    attempts = max(pending.count_failure(agent.name) for pending in lane.current)
    where = ", ".join(
        f"{p.event.topic}[{p.event.partition}]@{p.event.offset}" for p in lane.current
    )
    if lane.ctx.retry_topics:
        if _retry_later(lane, error, where):
            return None
    elif attempts <= policy.retries:
        delay = policy.delay(attempts)
        log.warning(
            "agent %r failed on %s (attempt %d of %d): %r; retrying in %.2fs",
            agent.name, where, attempts, policy.retries + 1, error, delay,
        )  # fmt: skip
        lane.retry_current()
        return delay
    if policy.on_exhausted == "stop":
        log.error("agent %r failed on %s %d time(s); stopping the worker", agent.name,
                  where, attempts, exc_info=error)  # fmt: skip
        lane.retry_current()
        lane.close()  # left uncommitted: processed again after a restart
        lane.ctx.on_fatal(error)
        return None
    if policy.on_exhausted == "dead_letter":
        log.error("agent %r failed on %s %d time(s): %r; sent to %s", agent.name, where,
                  attempts, error, lane.ctx.dead_letter_topic)  # fmt: skip
        lane.dead_letter_current(error)
        lane.ctx.dead_lettered(agent.name, type(error).__name__)
    else:
        log.error("agent %r failed on %s %d time(s); skipped", agent.name, where,
                  attempts, exc_info=error)  # fmt: skip
        lane.drop_current()
    return None


def _retry_later(lane: Lane, error: Exception, where: str) -> bool:
    """Non-blocking retries: send the current event(s) to the next retry topic and go on.
    Returns False when the event came from the last retry topic (the policy's
    ``on_exhausted`` applies)."""
    topics, delays = lane.ctx.retry_topics, lane.ctx.policy.retry_topics
    topic = lane.state.topic
    level = topics.index(topic) + 1 if topic in topics else 0
    if level >= len(topics):
        return False
    delay = delays[level].total_seconds()
    log.warning(
        "agent %r failed on %s: %r; sent to %s, to be processed again in %gs",
        lane.agent.name, where, error, topics[level], delay,
    )  # fmt: skip
    lane.retry_later_current(topics[level], delay, error)
    return True
