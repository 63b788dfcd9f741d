"""The worker's side of partition ownership: rebalance callbacks, commits and rewinds.

A mixin of :class:`streamer.worker.runner.Worker`, kept apart so each module stays readable;
it shares the worker's partition map and runs, like the rest of the worker, only on the loop
thread. The callbacks run *inside* ``consume()``: they may commit (a cooperative revoke
commits first) but never seek; an aborted transaction only marks a rewind, which the pump
performs after ``consume()`` returns, so nothing fetched before the seek is processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from streamer.errors import KafkaOperationError, OutputRefused, StreamerError
from streamer.kafka.clients import ConnectionWatch, describe, is_transient
from streamer.worker.checkpoint import FLUSH_TIMEOUT, STUCK_GRACE, Refusal
from streamer.worker.committer import Committer
from streamer.worker.inline import lane_class
from streamer.worker.lane_context import LaneContext
from streamer.worker.lane_task import run_lane
from streamer.worker.partition import (
    REFUSED_CODES,
    Effects,
    PartitionState,
    WorkerStats,
    format_partitions,
)

if TYPE_CHECKING:
    from streamer.agents import Agent
    from streamer.app import App
    from streamer.kafka.backend import Backend, Consumer
    from streamer.settings import Settings
    from streamer.worker.metrics import WorkerMetrics
    from streamer.worker.standby import StandbyManager
    from streamer.worker.tables import TableManager

log = logging.getLogger("streamer.worker")

REWIND_TIMEOUT = 5.0  # seconds one read of the committed offsets may block the pump
REWIND_RETRY = 1.0  # seconds between tries while the group coordinator does not answer
REPLACE_POLL = 0.05  # seconds between looks at a new producer starting on its thread
HELD_BACK_SAYS = 1.0  # seconds reading waits for a commit in flight before it is said at INFO
# A partition pauses once its lanes hold lane_buffer records, or this many consume batches
# if that is more. Pausing drops what the client prefetched for the partition and resuming
# fetches it again: with consume_batch at 2,000 over the default lane_buffer of 1,000, a
# pass-through paused a partition after almost every consume() and ran at a fifth of its
# rate, the loop idle 70% of the time (python -m bench, 400,000 records).
PAUSE_FLOOR = 2


class PartitionOwnership:
    """Assign, revoke, lose, pause/resume, commit and rewind partitions (a mixin of Worker)."""

    # The worker's state this mixin works on (set by Worker.__init__ and Worker.run).
    app: App
    settings: Settings
    group_id: str
    metrics: WorkerMetrics
    stats: WorkerStats
    _states: dict[tuple[str, int], PartitionState]
    _released: list[Effects]
    _subscribers: dict[str, list[Agent]]
    _lane_contexts: dict[str, LaneContext]
    _tables: TableManager
    _standby: StandbyManager | None
    _standby_following: bool
    _background_tasks: list[asyncio.Task[None]]
    _consumer: Consumer | None
    _to_resume: set[PartitionState]
    _committer: Committer | None
    _rewind_pending: bool
    _rewind_not_before: float  # monotonic time of the next try of a pending rewind (0: now)
    _exactly_once: bool
    _watch: ConnectionWatch
    _held_back: float | None  # since when reading waits for a commit in flight
    _held_back_said: bool

    def _fail(self, error: BaseException) -> None: ...  # Worker's: stop, run() raises

    backend: Backend

    # -- flow control: a paused partition resumes once its lanes drained to half of its
    # bound (lane_buffer, or more for agents that take() big batches) -------------------

    def _on_taken(self, state: PartitionState) -> None:
        if state.buffered <= max(self.settings.lane_buffer, state.pause_at) // 2:
            self._to_resume.add(state)

    def _resume_drained(self) -> None:
        drained = [
            s for s in self._to_resume if s.paused and (s.topic, s.partition) in self._states
        ]
        self._to_resume.clear()
        if drained and self._consumer is not None:
            self._consumer.resume([TopicPartition(s.topic, s.partition) for s in drained])
            for state in drained:
                state.paused = False
            log.debug("resumed %s: lanes drained", format_partitions(drained))

    # -- rebalance callbacks (run inside consume(), on the loop thread) ---------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # An assignment is the group coordinator's answer: Kafka is back, even for a worker
        # whose partitions bring no new records (the pump notices those otherwise).
        self._watch.contact()
        if not partitions:
            return
        for tp in partitions:
            state = PartitionState(tp.topic, tp.partition, self._released.append, self.stats)
            # One consume() can hand a partition consume_batch records at once: a bound
            # below two of them would pause it after nearly every call (see PAUSE_FLOOR).
            state.pause_at = PAUSE_FLOOR * self.settings.consume_batch
            for agent in self._subscribers.get(tp.topic, []):
                ctx = self._lane_contexts[agent.name]
                make = lane_class(agent.table)  # tables from topics, joins: on dispatch
                lanes = [
                    make(
                        state,
                        agent,
                        i,
                        ctx,
                        self.metrics.lane_probe(tp.topic, tp.partition, agent.name),
                    )
                    for i in range(agent.concurrency)
                ]
                state.routes.append(lanes)
                state.tasks.extend(asyncio.ensure_future(run_lane(lane)) for lane in lanes)
            self._states[(tp.topic, tp.partition)] = state
            self._tables.start(state)
        self.metrics.assigned(partitions)
        if self._standby is not None and not self._standby_following:
            # After this first assignment (whose restores claim their partitions first):
            # follow every table partition not assigned here.
            self._standby_following = True
            count = self._tables.tables[0].partitions or 0
            follow = asyncio.ensure_future(self._standby.follow_unowned(count))
            self._background_tasks.append(follow)
        log.info(
            "assigned %s (now owning %d partitions)",
            format_partitions(partitions),
            len(self._states),
        )

    def _release_partitions(self, partitions: list[TopicPartition], *, commit: bool) -> None:
        # A checkpoint committing in the background covers these partitions too: it
        # finishes (into their stores) before anything of them is released.
        self._settle_commit()
        states = [
            state
            for tp in partitions
            if (state := self._states.pop((tp.topic, tp.partition), None)) is not None
        ]
        self.metrics.released(states)
        for state in states:
            for lane in state.lanes:
                lane.close()
        paused = [TopicPartition(s.topic, s.partition) for s in states if s.paused]
        if paused and self._consumer is not None:
            # librdkafka keeps a partition's pause flag across unassign/assign: a partition
            # revoked while paused would never be fetched again if it came back.
            self._consumer.resume(paused)
        if commit:
            # Under exactly-once one transaction spans every partition: commit them all.
            self._commit([*states, *self._states.values()])
        for state in states:
            self._tables.release(state)
            for task in state.tasks:
                task.cancel()
            self._to_resume.discard(state)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        # Cooperative revoke: commit what is complete first, so the next owner starts there.
        self._release_partitions(partitions, commit=True)
        log.info("revoked %s (owning %d)", format_partitions(partitions), len(self._states))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost means another member may already own them: committing now could overwrite
        # its progress, so drop everything uncommitted (it is processed again).
        self._release_partitions(partitions, commit=False)
        log.warning("lost %s without a clean hand-over", format_partitions(partitions))
        if self._exactly_once and self._committer is not None:
            # The open transaction holds work of the lost partitions too: abort it all.
            self._committer.fail("partitions were lost")
            self._checkpoint_failed()

    # -- commits and their failures: the committer decides, the worker rewinds ---------------

    def _committing(self) -> bool:
        """A checkpoint is committing in the background."""
        return self._committer is not None and self._committer.in_flight

    def _holding_back(self) -> bool:
        """Reading waits for the commit in flight (see ``Committer.holding_back``). At full
        speed that is routine (a few times a second, for some milliseconds each): said at
        DEBUG, and at INFO once one wait lasts HELD_BACK_SAYS seconds (a slow broker)."""
        committer = self._committer
        if committer is None or not committer.holding_back:
            self._held_back = None
            return False
        now = time.monotonic()
        if self._held_back is None:
            self._held_back = now
            self._held_back_said = False
            self.stats.held_back += 1
            log.debug(
                "reading paused: the outputs of %d events wait for the broker to confirm "
                "the transaction in flight", committer.held,
            )  # fmt: skip
        elif not self._held_back_said and now - self._held_back >= HELD_BACK_SAYS:
            self._held_back_said = True
            log.info(
                "reading has waited %.0fs for the broker to confirm the transaction in "
                "flight (the outputs of %d events wait for it)", now - self._held_back,
                committer.held,
            )  # fmt: skip
        return True

    def _checkpoint_poll(self) -> None:
        """Serve the producer's callbacks and finish a background commit that returned."""
        committer = self._committer
        assert committer is not None
        finished = committer.poll()
        if finished is not None:
            self._commit_finished(finished)

    def _settle_commit(self) -> None:
        """Wait for a background commit, if any, and finish it."""
        if self._committer is not None:
            finished = self._committer.settle()
            if finished is not None:
                self._commit_finished(finished)

    def _commit_finished(self, committed: bool) -> None:
        if committed:
            self._prune_refused()
        elif self._committer is not None and self._committer.failed:
            self._checkpoint_failed()

    def _commit_in_background(self) -> None:
        """The commit interval's checkpoint: under exactly-once the broker confirms it while
        events go on (see :meth:`Committer.commit_in_background`)."""
        committer = self._committer
        assert committer is not None
        self._flush_released()
        if not committer.commit_in_background(self._states.values()):
            self._checkpoint_failed()
        elif not committer.in_flight and not committer.checkpoint.background:
            self._prune_refused()

    def _commit(
        self,
        states: Iterable[PartitionState] | None = None,
        timeout: float = FLUSH_TIMEOUT,
        grace: float = STUCK_GRACE,
    ) -> bool:
        """Ask the committer to checkpoint ``states`` (all owned by default) within
        ``timeout`` (and ``grace`` for a stuck client call). Returns False when nothing was
        committed because this or an earlier checkpoint failed: then every partition is
        rewound (by the pump, outside consume())."""
        committer = self._committer
        assert committer is not None
        self._flush_released()
        owned = self._states.values() if states is None else states
        if committer.commit(owned, timeout, grace):
            self._prune_refused()
            return True
        if committer.failed:
            self._checkpoint_failed()
        return False

    def _checkpoint_failed(self) -> None:
        """The committer is FAILED: nothing of the checkpoint may be released or committed;
        refused outputs go to their agents' policies; every partition is rewound."""
        committer = self._committer
        assert committer is not None
        self._released.clear()
        for state in self._states.values():
            state.discard()
        failure = committer.failure
        if failure is not None and not failure.reported:
            failure.reported = True
            self._blame(failure.refusals)
            if failure.fatal is not None:
                self._fail(failure.fatal)
        self._rewind_pending = True

    def _blame(self, refusals: list[Refusal]) -> None:
        """Hand each output the broker refused to the policy of the agent that produced it
        (DESIGN §2 rule 11): its lanes see the record again after the rewind."""
        seen: set[tuple[str, tuple[str, int, int]]] = set()
        for effects, err, topic in refusals:
            if err.code() not in REFUSED_CODES:
                continue  # a timeout or a purge: not the record's fault; just rewound
            message_less = topic is None  # refused by produce() at once, before any batch
            event = effects.event
            topic = topic or next((o[0] for o in effects.outputs), "its sink")
            if effects.dead_letter:
                self._fail(OutputRefused(
                    f"{topic} refused a dead letter: {err.str()}; check the dead-letter "
                    "topic's configuration (the failed record stays uncommitted)",
                    topic=topic, code=err.name(),
                ))  # fmt: skip
                continue
            if effects.owner is None or event is None:
                log.error("a timer's output to %s was refused (%s); it is dropped", topic,
                          err.str())  # fmt: skip
                continue
            where = (event.topic, event.partition, effects.offset)
            if (effects.owner, where) in seen:
                continue
            seen.add((effects.owner, where))
            refused = self._lane_contexts[effects.owner].refused
            before = refused.get(where)
            # The broker refuses a partition's whole batch for one bad record. A first
            # refusal of outputs that shared their requests is a suspicion, not an attempt
            # (0): the record is processed again and its outputs go alone (Effects.alone),
            # so a record that only shared a batch with the bad one is never dead-lettered.
            # A refusal raised by produce() itself (no message) is the record's own.
            if before is not None:
                attempts = before.attempts + 1
            else:
                attempts = 1 if effects.alone or message_less else 0
            refused[where] = OutputRefused(
                f"{topic} refused a record: {err.str()} ({err.name()})",
                topic=topic,
                code=err.name(),
                attempts=attempts,
            )

    def _prune_refused(self) -> None:
        """Forget refusals of records now committed."""
        for ctx in self._lane_contexts.values():
            if not ctx.refused:
                continue
            for where in list(ctx.refused):
                state = self._states.get(where[:2])
                if state is not None and state.committed is not None and state.committed > where[2]:
                    del ctx.refused[where]

    def _rewind(self) -> None:
        """Drop every owned partition's in-flight work and staged state, and restart each
        from its committed offset (after a failed checkpoint). Never call it inside
        consume(): the seek must come after everything that call returns.

        Reading the committed offsets needs the group coordinator, which may be away (a
        broker restarting answers NOT_COORDINATOR), and a fenced producer's replacement
        starts on a thread (for as long as the broker takes): meanwhile the rewind stays
        pending, nothing is processed (the pump drops what it fetches), and it is tried
        again a moment later.
        """
        assert self._consumer is not None and self._committer is not None
        now = time.monotonic()
        if now < self._rewind_not_before:
            return
        owned = [TopicPartition(s.topic, s.partition) for s in self._states.values()]
        self._release_partitions(owned, commit=False)
        try:
            ready = self._committer.rewound()
        except StreamerError as exc:  # a new producer that can never start: one line
            self._fail(exc)
            return
        if not ready:  # a new producer is starting: nothing is processed until it did
            self._rewind_not_before = now + REPLACE_POLL
            return
        # Every partition the group gave this worker, including any released by an earlier
        # attempt of this rewind; never one it no longer owns.
        partitions = self._consumer.assignment()
        if partitions:
            try:
                committed = self._consumer.committed(partitions, timeout=REWIND_TIMEOUT)
            except KafkaException as exc:
                if not is_transient(exc):
                    self._fail(KafkaOperationError(
                        f"cannot read the committed offsets to rewind to: {describe(exc)}"
                    ))  # fmt: skip
                    return
                if self._rewind_not_before == 0.0:
                    log.warning(
                        "cannot read the committed offsets to rewind to (%s); nothing is "
                        "processed until the group coordinator answers",
                        describe(exc),
                    )
                self._rewind_not_before = now + REWIND_RETRY
                return
        self._rewind_pending = False
        self._rewind_not_before = 0.0
        if not partitions:
            return
        self._on_assign(self._consumer, partitions)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            state = self._states.get((tp.topic, tp.partition))
            if state is not None and tp.offset >= 0:
                state.fetched_to = tp.offset  # a record below it is committed work
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        log.warning("rewound %s to their committed offsets", format_partitions(partitions))

    def _flush_released(self) -> None:
        if self._released:
            assert self._committer is not None
            try:
                self._committer.release(self._released)
            finally:
                self._released.clear()
