"""The committer: the one owner that decides whether and when work is committed.

The commit interval, a cooperative revoke, lost partitions, shutdown and the rewind after
a failure all *ask* the committer; none commits on its own (DESIGN §2 rule 9). Its status
is explicit::

    OPEN ──commit()──▶ COMMITTING ──▶ OPEN          (the checkpoint is durable)
                                 └──▶ FAILED        (CheckpointFailed: nothing of it commits)
    OPEN ──fail()───▶ FAILED                        (lost partitions: the transaction aborts)
    FAILED ──rewound()──▶ OPEN                      (the worker rewound every partition)
    any ──close()──▶ CLOSED

While FAILED every ``commit()`` is refused: a revoke during shutdown, or the revoke fired
by closing the consumer, can therefore never commit offsets or changelog records whose
outputs died with an aborted transaction. Leaving FAILED takes a rewind: every partition
restarts from its committed offset with fresh state, and a fenced producer is replaced.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable

from streamer.worker.checkpoint import FLUSH_TIMEOUT, Checkpoint, CheckpointFailed
from streamer.worker.partition import Effects, PartitionState

log = logging.getLogger("streamer.checkpoint")


class CommitStatus(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    FAILED = "failed"
    CLOSED = "closed"


class Committer:
    """Owns the checkpoint (and its producer) and the commit status.

    ``new_checkpoint`` builds a checkpoint with a fresh producer: called at start and after
    the producer was fenced. ``on_new_checkpoint`` is told of each (metrics watch it).
    """

    def __init__(
        self,
        new_checkpoint: Callable[[], Checkpoint],
        on_new_checkpoint: Callable[[Checkpoint], None] = lambda _: None,
    ) -> None:
        self._new_checkpoint = new_checkpoint
        self._on_new_checkpoint = on_new_checkpoint
        self.checkpoint = new_checkpoint()
        on_new_checkpoint(self.checkpoint)
        self.status = CommitStatus.OPEN
        self.failure: CheckpointFailed | None = None
        self.commits = 0
        self.failures = 0

    @property
    def failed(self) -> bool:
        return self.status is CommitStatus.FAILED

    def release(self, batch: list[Effects]) -> None:
        """Hand outputs of completed events to the open checkpoint; dropped when FAILED
        (they belong to work that is rewound) or CLOSED."""
        if self.status is CommitStatus.OPEN:
            self.checkpoint.release(batch)

    def poll(self) -> None:
        if self.status is not CommitStatus.CLOSED:
            self.checkpoint.poll()

    def commit(self, states: Iterable[PartitionState], timeout: float = FLUSH_TIMEOUT) -> bool:
        """Commit the completed work of ``states``. Returns False, committing nothing, when
        the committer is not OPEN or when this checkpoint fails (then it is FAILED)."""
        if self.status is not CommitStatus.OPEN:
            if self.status is CommitStatus.FAILED:
                log.debug("commit refused: the last checkpoint failed and is not rewound yet")
            return False
        self.status = CommitStatus.COMMITTING
        try:
            self.checkpoint.commit(states, timeout)
        except CheckpointFailed as failure:
            self._failed(failure)
            return False
        self.status = CommitStatus.OPEN
        self.commits += 1
        return True

    def fail(self, reason: str) -> None:
        """Drop the open checkpoint (lost partitions): abort its transaction; FAILED."""
        if self.status is not CommitStatus.OPEN:
            return
        try:
            self.checkpoint.abort(reason)
        except CheckpointFailed as failure:
            self._failed(failure)
            return
        self._failed(CheckpointFailed(reason))

    def _failed(self, failure: CheckpointFailed) -> None:
        self.status = CommitStatus.FAILED
        self.failures += 1
        if self.failure is None or not self.failure.fenced:
            self.failure = failure
        else:  # keep knowing that the producer must be replaced
            failure.fenced = True
            self.failure = failure
        log.warning(
            "checkpoint failed: %s; nothing of it is committed, every partition restarts "
            "from its committed offset",
            failure.reason,
        )

    def rewound(self) -> None:
        """Every partition was rewound: accept work again (with a fresh producer if the
        old one was fenced)."""
        if self.status is not CommitStatus.FAILED:
            return
        if self.failure is not None and self.failure.fenced:
            self.checkpoint.close(0.5)
            self.checkpoint = self._new_checkpoint()
            self._on_new_checkpoint(self.checkpoint)
        self.failure = None
        self.status = CommitStatus.OPEN

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Abort what is still open and flush the producer, within ``timeout``."""
        if self.status is CommitStatus.CLOSED:
            return
        self.status = CommitStatus.CLOSED
        self.checkpoint.close(timeout)
