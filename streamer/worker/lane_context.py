"""What every lane of one agent shares (:class:`LaneContext`), and how a record no agent can
see is settled (:func:`settle_undecodable`). Split from ``streamer.worker.lanes`` to keep
both small."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.clock import SYSTEM_CLOCK, Clock
from streamer.errors import OutputRefused
from streamer.kafka.backend import Message
from streamer.policy import ErrorPolicy
from streamer.ratelimit import TokenBucket
from streamer.worker.dead_letters import dead_letter
from streamer.worker.partition import SKIPPED_EVENT, Effects, PartitionState, Pending

log = logging.getLogger("streamer.agent")


@dataclass(frozen=True)
class LaneContext:
    """What every lane of one agent shares: its error policy and the worker's callbacks."""

    policy: ErrorPolicy
    dead_letter_topic: str
    on_taken: Callable[[PartitionState], None]  # a paused partition's lane drained a bit
    on_fatal: Callable[[BaseException], None]  # the policy says: stop the worker
    dead_lettered: Callable[[str, str], None]  # counts (agent, reason) for the metrics
    # Records of this agent whose outputs the broker refused, by (topic, partition, offset):
    # filled by the worker when a checkpoint fails, read by the lanes after the rewind.
    refused: dict[tuple[str, int, int], OutputRefused] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    bucket: TokenBucket | None = None  # the agent-wide rate limit, shared by its lanes
    rate_limited: Callable[[str, float], None] = lambda _agent, _seconds: None  # metrics
    retry_topics: tuple[str, ...] = ()  # non-blocking retries: the agent's retry topics


def settle_undecodable(
    state: PartitionState,
    message: Message,
    error: Exception,
    readers: list[tuple[str, LaneContext]],
    fail: Callable[[BaseException], None],
) -> None:
    """A record no agent can see: dead-letter it (for each reader whose policy says so),
    without retries, and go on with the next offset; a reader whose policy says stop stops
    the worker with the offset held uncommitted."""
    letters: list[Effects] = []
    sent_to: list[str] = []
    for name, ctx in readers:
        if ctx.policy.on_exhausted == "stop":
            # Track it as never completing, so no commit can pass this offset.
            state.track(Pending(SKIPPED_EVENT, 1, message.offset() or 0, message))
            fail(error)
            return
        if ctx.policy.on_exhausted == "dead_letter":
            effects = Effects(name, None)
            effects.dead_letter = True
            effects.add_output(
                dead_letter(ctx.dead_letter_topic, message, error, agent=name, attempts=1)
            )
            letters.append(effects)
            sent_to.append(ctx.dead_letter_topic)
            ctx.dead_lettered(name, type(error).__name__)
    where = f"{state.label}@{message.offset()}"
    sent = f"; sent to {', '.join(sent_to)}" if sent_to else ""
    log.error("%s cannot be decoded: %s%s", where, error, sent or "; skipped")
    state.stats.errors += 1
    state.skip(message, letters)
