"""The committer's states: after a failed checkpoint nothing commits until the rewind."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

from streamer.worker import committer as committer_module
from streamer.worker import rebalance as rebalance_module
from streamer.worker.checkpoint import Checkpoint, CheckpointFailed, InFlightCommit
from streamer.worker.committer import CommitStatus, Committer
from streamer.worker.partition import Effects, PartitionState, WorkerStats
from streamer.worker.rebalance import PartitionOwnership
from tests.kafkatools import wait_until


class ScriptedCheckpoint(Checkpoint):
    """A checkpoint whose commits succeed or fail as the test says (no Kafka involved: the
    committer's decisions are what is under test)."""

    def __init__(self, outcomes: list[CheckpointFailed | None]) -> None:
        self.outcomes = outcomes
        self.commits = 0
        self.aborts: list[str] = []
        self.closed = False

    def commit(
        self, states: Iterable[PartitionState], timeout: float = 30.0, grace: float = 15.0
    ) -> None:
        self.commits += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome

    def abort(self, reason: str) -> None:
        self.aborts.append(reason)

    def close(self, timeout: float = 30.0) -> None:
        self.closed = True

    def poll(self) -> None:
        pass


def _rewound(committer: Committer) -> None:
    """Tell the committer every partition was rewound, and wait for a new producer to
    start if it replaces one (it does so on a thread)."""
    wait_until(committer.rewound, "the new checkpoint never started", timeout=10)


def _committer(*checkpoints: ScriptedCheckpoint) -> tuple[Committer, list[Any]]:
    made: list[Any] = []
    queue = list(checkpoints)

    def new() -> Checkpoint:
        made.append(queue.pop(0))
        return made[-1]  # type: ignore[no-any-return]

    return Committer(new), made


def test_a_failed_checkpoint_refuses_every_commit_until_the_rewind() -> None:
    first = ScriptedCheckpoint([None, CheckpointFailed("transaction aborted")])
    committer, _ = _committer(first)
    assert committer.commit([]) and committer.status is CommitStatus.OPEN
    assert not committer.commit([])
    assert committer.status is CommitStatus.FAILED
    # A revoke, or leaving the group at shutdown, asks again: refused, nothing attempted.
    assert not committer.commit([]) and first.commits == 2
    _rewound(committer)
    assert committer.status is CommitStatus.OPEN and committer.commit([])
    assert first.commits == 3


def test_a_fenced_producer_is_replaced_at_the_rewind() -> None:
    first = ScriptedCheckpoint([CheckpointFailed("fenced", fenced=True)])
    second = ScriptedCheckpoint([])
    committer, made = _committer(first, second)
    assert not committer.commit([])
    assert committer.checkpoint is first  # not replaced before the partitions are rewound
    _rewound(committer)
    assert first.closed and committer.checkpoint is second and made == [first, second]
    assert committer.commit([]) and second.commits == 1


def test_a_new_producer_that_cannot_start_yet_is_tried_again_off_the_loop() -> None:
    """The replacement starts on a thread: rewound() answers at once (False while it
    starts), a start that only timed out (the broker away) is tried again for as long as
    it takes, and one that can never succeed is raised."""
    from streamer.worker.transactions import ProducerFenced

    first, second = ScriptedCheckpoint([CheckpointFailed("fenced", fenced=True)]), None
    starts: list[str] = []
    release = threading.Event()

    def new() -> Checkpoint:
        starts.append("start")
        if len(starts) == 1:
            return first
        if len(starts) <= 3:
            away = ProducerFenced("cannot start transactions: timed out")
            away.retriable = True
            raise away
        release.wait(10)  # a start still waiting on the broker
        return ScriptedCheckpoint([])

    committer = Committer(new)
    assert not committer.commit([])
    assert not committer.rewound()  # starting: the caller is not kept waiting
    # Two starts that timed out, tried again: the fourth is under way.
    wait_until(lambda: committer.rewound() or len(starts) >= 4, "no start tried again", timeout=10)
    assert not committer.rewound() and committer.failed  # the fourth still waits
    release.set()
    _rewound(committer)
    assert committer.checkpoint is not first and committer.commit([]) and second is None

    def refused() -> Checkpoint:
        if not starts or starts[-1] != "once":
            starts.append("once")
            return ScriptedCheckpoint([CheckpointFailed("fenced", fenced=True)])
        raise ProducerFenced("cannot start transactions: the id is in use")

    committer = Committer(refused)
    assert not committer.commit([])
    with pytest.raises(ProducerFenced, match="in use"):
        wait_until(committer.rewound, "the hopeless start never failed", timeout=10)


def test_a_renewed_committer_builds_the_next_checkpoint_for_the_new_consumer_off_the_loop() -> None:
    """The worker replaced its consumer: the open checkpoint is closed (its transaction
    aborted) at once, nothing commits until the new one, built by the new factory on a
    thread, is ready; one that was still starting for the old consumer is not used."""
    first, stale = ScriptedCheckpoint([CheckpointFailed("fenced", fenced=True)]), None
    release = threading.Event()

    def old_factory() -> Checkpoint:
        nonlocal stale
        if stale is None and first.commits == 0:
            return first
        release.wait(10)  # a replacement for the old consumer, still starting
        stale = ScriptedCheckpoint([])
        return stale

    committer = Committer(old_factory)
    assert not committer.commit([]) and not committer.rewound()  # replacing, for the old one
    renewed = ScriptedCheckpoint([])
    committer.renew(lambda: renewed, timeout=1.0)
    assert first.closed and committer.failed and committer.renewing
    assert not committer.commit([]) and first.commits == 1  # nothing commits meanwhile
    release.set()
    _rewound(committer)
    assert stale is not None and stale.closed  # built for the old consumer: closed, unused
    assert committer.checkpoint is renewed and committer.commit([]) and renewed.commits == 1
    assert not committer.renewing


def test_lost_partitions_abort_and_fail_the_open_checkpoint() -> None:
    first = ScriptedCheckpoint([])
    committer, _ = _committer(first)
    committer.fail("partitions were lost")
    assert first.aborts == ["partitions were lost"]
    assert committer.failed and not committer.commit([]) and first.commits == 0


def test_a_closed_committer_commits_and_releases_nothing() -> None:
    first = ScriptedCheckpoint([])
    committer, _ = _committer(first)
    committer.close()
    assert first.closed and not committer.commit([]) and first.commits == 0


def test_an_abort_that_fails_when_partitions_are_lost_still_fails_and_replaces_the_producer() -> (
    None
):
    class AbortFails(ScriptedCheckpoint):
        def abort(self, reason: str) -> None:
            raise CheckpointFailed(f"aborting ({reason}) failed", fenced=True)

    first, second = AbortFails([]), ScriptedCheckpoint([])
    committer, _ = _committer(first, second)
    committer.fail("partitions were lost")
    assert committer.failed and not committer.commit([]) and first.commits == 0
    _rewound(committer)
    assert committer.checkpoint is second and committer.commit([])


class BackgroundCheckpoint(ScriptedCheckpoint):
    """A checkpoint that commits in the background: its round trips block until the test
    lets them return (with the outcome it scripted), as a broker confirming late would."""

    background = True

    def __init__(self, outcomes: list[CheckpointFailed | None]) -> None:
        super().__init__(outcomes)
        self.released: list[list[Effects]] = []
        self.finished: list[CheckpointFailed | None] = []
        self.returned_when_finished: list[bool] = []
        self.go = threading.Event()

    def release(self, batch: list[Effects]) -> None:
        self.released.append(list(batch))

    def begin_commit(
        self, states: Iterable[PartitionState], timeout: float = 30.0
    ) -> InFlightCommit | None:
        self.commits += 1
        self.go.clear()
        return InFlightCommit(lambda: self.go.wait(10), [], [], time.monotonic() + timeout)

    def finish_commit(self, commit: InFlightCommit) -> None:
        self.returned_when_finished.append(commit.done)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        self.finished.append(outcome)
        if outcome is not None:
            raise outcome


def _effects(n: int) -> list[Effects]:
    return [Effects(None, None, offset) for offset in range(n)]


def _returned(commit: InFlightCommit) -> bool:
    """Wait (bounded by its deadline) until the round trips of ``commit`` returned."""
    return commit.wait(0.0)


def test_outputs_released_while_a_background_commit_runs_wait_for_the_next_transaction() -> None:
    checkpoint = BackgroundCheckpoint([])
    committer, _ = _committer(checkpoint)
    first = _effects(2)
    committer.release(first)
    assert committer.commit_in_background([]) and committer.in_flight
    assert committer.status is CommitStatus.COMMITTING
    later = _effects(3)
    committer.release(later)  # an event completed while the broker confirms
    assert checkpoint.released == [first]  # held, not in the committing transaction
    assert committer.commit_in_background([]) and checkpoint.commits == 1  # none overlaps
    assert committer.poll() is None  # not returned yet
    checkpoint.go.set()
    in_flight = committer._in_flight
    assert in_flight is not None and _returned(in_flight)
    assert committer.poll() is True
    assert committer.status is CommitStatus.OPEN and committer.commits == 1
    assert checkpoint.released == [first, later]  # into the next transaction, in order


def test_reading_is_held_back_once_the_held_outputs_reach_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(committer_module, "HELD_MAX", 5)
    checkpoint = BackgroundCheckpoint([])
    committer, _ = _committer(checkpoint)
    committer.release(_effects(50))  # no commit in flight: nothing is held
    assert not committer.holding_back
    assert committer.commit_in_background([]) and committer.in_flight
    committer.release(_effects(4))
    assert committer.held == 4 and not committer.holding_back
    committer.release(_effects(1))
    assert committer.holding_back
    checkpoint.go.set()
    assert committer.settle() is True
    assert committer.held == 0 and not committer.holding_back


def test_a_background_commit_that_fails_drops_the_held_outputs_and_refuses_commits() -> None:
    checkpoint = BackgroundCheckpoint([CheckpointFailed("transaction aborted")])
    committer, _ = _committer(checkpoint)
    assert committer.commit_in_background([])
    committer.release(_effects(2))
    checkpoint.go.set()
    assert committer.settle() is False
    assert committer.failed and checkpoint.released == []
    assert not committer.commit([]) and checkpoint.commits == 1
    committer.release(_effects(1))
    assert checkpoint.released == []
    _rewound(committer)
    assert committer.status is CommitStatus.OPEN


def test_every_other_path_settles_the_background_commit_first() -> None:
    # commit(): the background checkpoint finishes, then the requested one commits.
    checkpoint = BackgroundCheckpoint([])
    committer, _ = _committer(checkpoint)
    assert committer.commit_in_background([])
    checkpoint.go.set()
    assert committer.commit([]) and not committer.in_flight
    assert checkpoint.finished == [None] and checkpoint.commits == committer.commits == 2
    # fail(): the background checkpoint failed meanwhile: nothing left to abort.
    failing = BackgroundCheckpoint([CheckpointFailed("fenced", fenced=True)])
    committer, _ = _committer(failing)
    assert committer.commit_in_background([])
    failing.go.set()
    committer.fail("partitions were lost")
    assert committer.failed and failing.aborts == []
    assert committer.failure is not None and committer.failure.fenced
    # close(): it finishes before the producer closes.
    closing = BackgroundCheckpoint([])
    committer, _ = _committer(closing)
    assert committer.commit_in_background([])
    closing.go.set()
    committer.close()
    assert closing.finished == [None] and closing.closed and committer.commits == 1


def test_a_checkpoint_without_background_commits_commits_at_once() -> None:
    checkpoint = ScriptedCheckpoint([None, CheckpointFailed("flush timed out")])
    committer, _ = _committer(checkpoint)
    assert committer.commit_in_background([]) and not committer.in_flight
    assert checkpoint.commits == 1 and committer.status is CommitStatus.OPEN
    assert not committer.commit_in_background([]) and committer.failed


def test_a_commit_gives_a_background_commit_its_own_time_and_only_the_callers_grace() -> None:
    """A stopping worker settles a background commit the broker does not confirm (a broker
    that went away) within the time that commit began with and the stop's grace, then
    finishes it as given up (the checkpoint words it as unconfirmed): it does not wait the
    15 s a running worker gives a stuck call."""
    checkpoint = BackgroundCheckpoint([CheckpointFailed("not confirmed in time")])
    committer, _ = _committer(checkpoint)
    assert committer.commit_in_background([], timeout=0.5)
    assert not committer.commit([], timeout=0.2, grace=0.1)
    assert checkpoint.returned_when_finished == [False]
    assert committer.failed and checkpoint.commits == 1  # the asked commit was refused
    checkpoint.go.set()


@pytest.mark.parametrize("kind", ["timeout", "fenced"])
def test_a_producer_whose_transactions_never_start_is_closed_before_the_error(
    kind: str,
) -> None:
    """A start given up is closed, so an init request still on its way never lands after a
    successor with the same transactional.id registered (it would fence that one)."""
    from streamer.kafka.memory import MemoryBackend, MemoryBroker
    from streamer.testing.faults import FaultyBackend, TransactionFailure
    from streamer.worker.transactions import INIT_ATTEMPTS, ProducerFenced, init_transactions

    never = TransactionFailure(kind, call="init", times=None)  # type: ignore[arg-type]
    backend = FaultyBackend(MemoryBackend(MemoryBroker("unit")), never)
    producer: Any = backend.producer({"transactional.id": "app-w1"})
    with pytest.raises(ProducerFenced, match="'app-w1'"):
        init_transactions(producer, "app-w1", "memory")
    assert producer.closed
    assert never.count == (INIT_ATTEMPTS if kind == "timeout" else 1)


class _Waiting:
    """What ``PartitionOwnership._holding_back`` asks of the committer."""

    def __init__(self) -> None:
        self.holding_back = True
        self.held = 7


class _Reader(PartitionOwnership):
    def __init__(self, committer: _Waiting) -> None:
        self._committer = committer  # type: ignore[assignment]
        self.stats = WorkerStats()
        self._held_back = None
        self._held_back_said = False


def test_reading_held_back_is_routine_at_debug_and_said_at_info_once_it_lasts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At full speed reading waits for commits a few times a second: that is no news (DEBUG).
    A wait that lasts HELD_BACK_SAYS seconds is (INFO), once per wait."""
    caplog.set_level(logging.DEBUG, logger="streamer.worker")
    committer = _Waiting()
    reader = _Reader(committer)
    assert reader._holding_back()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    monkeypatch.setattr(rebalance_module, "HELD_BACK_SAYS", 0.0)  # this wait lasted long enough
    assert reader._holding_back() and reader._holding_back()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "for the broker to confirm the transaction" in infos[0] and "7 events" in infos[0]
    committer.holding_back = False  # confirmed: reading goes on
    assert not reader._holding_back()
    committer.holding_back = True  # the next commit makes it wait again
    assert reader._holding_back() and reader._holding_back()
    assert reader.stats.held_back == 2
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 2
