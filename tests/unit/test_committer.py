"""The committer's states: after a failed checkpoint nothing commits until the rewind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streamer.worker.checkpoint import Checkpoint, CheckpointFailed
from streamer.worker.committer import CommitStatus, Committer
from streamer.worker.partition import PartitionState


class ScriptedCheckpoint(Checkpoint):
    """A checkpoint whose commits succeed or fail as the test says (no Kafka involved: the
    committer's decisions are what is under test)."""

    def __init__(self, outcomes: list[CheckpointFailed | None]) -> None:
        self.outcomes = outcomes
        self.commits = 0
        self.aborts: list[str] = []
        self.closed = False

    def commit(self, states: Iterable[PartitionState], timeout: float = 30.0) -> None:
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
    committer.rewound()
    assert committer.status is CommitStatus.OPEN and committer.commit([])
    assert first.commits == 3


def test_a_fenced_producer_is_replaced_at_the_rewind() -> None:
    first = ScriptedCheckpoint([CheckpointFailed("fenced", fenced=True)])
    second = ScriptedCheckpoint([])
    committer, made = _committer(first, second)
    assert not committer.commit([])
    assert committer.checkpoint is first  # not replaced before the partitions are rewound
    committer.rewound()
    assert first.closed and committer.checkpoint is second and made == [first, second]
    assert committer.commit([]) and second.commits == 1


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
    committer.rewound()
    assert committer.checkpoint is second and committer.commit([])
