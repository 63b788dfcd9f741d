"""Stopping the worker: signals, the drain, the final checkpoint, the exit's verdict.

A mixin of :class:`streamer.worker.runner.Worker` (like ``rebalance``), kept apart so the
stop sequence reads as one piece; it runs on the loop thread and shares the worker's state.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

from streamer.errors import CommitFailed, ShutdownIncomplete, StreamerError
from streamer.worker.checkpoint import CheckpointFailed
from streamer.worker.partition import PartitionState
from streamer.worker.rebalance import PartitionOwnership

if TYPE_CHECKING:
    from streamer.worker.standby import StandbyManager

log = logging.getLogger("streamer.worker")

# Seconds the final commit may take even when draining used all of shutdown_timeout: a
# transaction needs a moment to commit, and committing beats processing everything again.
FINAL_COMMIT_FLOOR = 5.0
# Seconds a stopping worker waits past a commit's timeout for a client call that overstays
# it (a broker that is away): the commit is then given up, unconfirmed, and the stop goes on.
STOP_COMMIT_GRACE = 5.0


class Stopping(PartitionOwnership):
    """Stop, drain and close (a mixin of Worker)."""

    _stopping: bool
    _stop_error: StreamerError | None
    _standby: StandbyManager | None
    _replay_state_dir: tempfile.TemporaryDirectory[str] | None

    def stop(self) -> None:
        """Ask the worker to stop; safe to call from a signal handler, more than once."""
        if not self._stopping:
            log.info("stopping: finishing in-flight events, then committing")
        self._stopping = True

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM, on the loop (:mod:`streamer.worker.signals` saw it, and handles a
        second one and the bound of the whole stop)."""
        self.stop()

    async def _shutdown(self) -> None:
        """Stop in a fixed order: timers; lanes stop taking events; agents finish the events
        they hold (their error policies apply as usual), bounded by ``shutdown_timeout``,
        with checkpoints meanwhile so a transaction never outlives its timeout; the final
        checkpoint; leave the group (its revoke cannot commit anything the committer
        refused); close tables and the producer. Never raises: what went wrong is kept in
        ``_stop_error`` for :meth:`run` to raise after everything is closed."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        for task in self._background_tasks:
            task.cancel()
        await asyncio.gather(*self._background_tasks, return_exceptions=True)
        states = list(self._states.values())
        for state in states:
            for lane in state.lanes:
                lane.close()
            if not state.ready.is_set():  # still restoring: its agents never started
                for task in state.tasks:
                    task.cancel()
        unfinished = await self._drain(states, deadline)
        committer = self._committer
        if committer is not None and self._consumer is not None:
            budget = max(FINAL_COMMIT_FLOOR, deadline - time.monotonic())
            committed = self._commit(timeout=budget, grace=STOP_COMMIT_GRACE)
            # Stopping while a rejoin's producer still starts: nothing is owned, nothing
            # failed (the work given up at the rejoin was said so then), so no error.
            if not committed and committer.failed and not committer.renewing:
                self._stop_error = _final_commit_failed(committer.failure, budget)
        if unfinished and self._stop_error is None:
            self._stop_error = ShutdownIncomplete(
                f"{unfinished} event(s) still in progress after shutdown_timeout="
                f"{self.settings.shutdown_timeout:g}s were cancelled; they stay uncommitted "
                "and are processed again by the next owner"
            )
        if self._consumer is not None:
            # Leaving the group revokes every partition: the revoke asks the committer,
            # which commits nothing new after the final commit, and nothing at all if it
            # failed.
            try:
                self._consumer.close()
            except Exception as exc:  # closing must go on: tables and producer below
                log.warning("leaving the consumer group failed: %s", exc)
            self._consumer = None
        self._release_partitions(
            [TopicPartition(s.topic, s.partition) for s in self._states.values()], commit=False
        )
        await self._tables.wait_idle()
        if self._standby is not None:
            await self._standby.stop()
        if committer is not None:
            committer.close(max(1.0, deadline - time.monotonic()))
        if self._replay_state_dir is not None:
            self._replay_state_dir.cleanup()
        log.info("worker stopped")

    async def _drain(self, states: list[PartitionState], deadline: float) -> int:
        """Let agents finish the events they hold until ``deadline``, committing every
        commit interval meanwhile. Returns how many events were still in progress (their
        agents are then cancelled)."""
        tasks = {task for state in states for task in state.tasks if not task.done()}
        interval = self.settings.effective_commit_interval
        while tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, tasks = await asyncio.wait(tasks, timeout=min(left, interval))
            self._checkpoint_poll()
            if tasks and self._committer is not None and not self._committer.failed:
                budget = max(FINAL_COMMIT_FLOOR, deadline - time.monotonic())
                self._commit(timeout=budget, grace=STOP_COMMIT_GRACE)
        if not tasks:
            return 0
        unfinished = sum(len(lane.current) for state in states for lane in state.lanes)
        log.warning(
            "%d agent instance(s) still busy after shutdown_timeout=%gs; cancelling them "
            "(their events stay uncommitted and will be processed again)",
            len(tasks),
            self.settings.shutdown_timeout,
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return max(unfinished, 1)


def _final_commit_failed(failure: CheckpointFailed | None, budget: float) -> CommitFailed:
    """The stop's error when its final commit failed, in words true to what is known."""
    if failure is not None and failure.unconfirmed:
        return CommitFailed(
            f"the final commit was not confirmed by the broker within {budget:.0f}s; its work "
            "is committed if the commit reached the broker, else processed again by the next "
            "owner (never both)"
        )
    reason = failure.reason if failure is not None else "unknown"
    return CommitFailed(
        f"the final commit failed ({reason}); the work since the last commit stays "
        "uncommitted and is processed again by the next owner"
    )
