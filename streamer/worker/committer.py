"""The committer: the one owner that decides whether and when work is committed.

The commit interval, a cooperative revoke, lost partitions, shutdown and the rewind after
a failure all *ask* the committer; none commits on its own (DESIGN §2 rule 9). Its status
is explicit::

    OPEN ──commit()──▶ COMMITTING ──▶ OPEN          (the checkpoint is durable)
                                 └──▶ FAILED        (CheckpointFailed: nothing of it commits)
    OPEN ──fail()───▶ FAILED                        (lost partitions: the transaction aborts)
    FAILED ──rewound()──▶ OPEN                      (the worker rewound every partition;
                                                     a fenced producer replaced on a thread)
    any ──renew()──▶ FAILED                         (the consumer was replaced: the next
                                                     checkpoint is built for the new one)
    any ──close()──▶ CLOSED

Under exactly-once the interval's checkpoints commit in the background
(:meth:`Committer.commit_in_background`): COMMITTING then lasts while the broker confirms the
transaction and the event loop goes on; outputs released meanwhile are held and handed to the
next transaction once this one committed (and once ``HELD_MAX`` events' outputs are held, the
worker reads no new records until then); :meth:`Committer.poll` finishes it when it
returned, and every other path (``commit()``, ``fail()``, ``close()``, releasing partitions)
first :meth:`~Committer.settle` s it, so no two checkpoints ever overlap.

While FAILED every ``commit()`` is refused: a revoke during shutdown, or the revoke fired
by closing the consumer, can therefore never commit offsets or changelog records whose
outputs died with an aborted transaction. Leaving FAILED takes a rewind: every partition
restarts from its committed offset with fresh state, and a fenced producer is replaced.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable

from streamer.threads import OnThread
from streamer.worker.checkpoint import (
    FLUSH_TIMEOUT,
    STUCK_GRACE,
    Checkpoint,
    CheckpointFailed,
    InFlightCommit,
)
from streamer.worker.partition import Effects, PartitionState

log = logging.getLogger("streamer.checkpoint")

# Events whose outputs may wait for a background commit before the worker stops reading new
# records until it is confirmed: memory stays bounded however long the broker takes (a
# commit may run for FLUSH_TIMEOUT + STUCK_GRACE). The bound also keeps transactions small:
# the held outputs all go into the next transaction, whose commit must deliver them first,
# so a large bound feeds itself (bigger transactions, longer commits, more held). Measured
# with python -m bench count_emit_eos (400,000 events, a 2-core machine with the broker on
# it): at 50,000 commits took 51 ms (median) to 615 ms, 50,500 events were held at the
# most, the loop spent 8.1-8.5 us of CPU per event at 115,000-117,000 events/s and peaked at
# 314 MB; at 10,000, 6.7-7.4 us, 130,000-144,000 events/s, 160 MB; at 5,000 about the same
# as 10,000, and 2,000 was slower again (the loop waits too often).
HELD_MAX = 10_000


RENEWED = "the consumer was replaced"  # the reason renew() gives; see Committer.renewing


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
        # The checkpoint committing in the background, and outputs released meanwhile.
        self._in_flight: InFlightCommit | None = None
        self._held: list[Effects] = []
        # A fresh checkpoint starting on a thread, after the producer was fenced, and the
        # factory it came from (a renew() while it starts makes it stale).
        self._replacing: OnThread[Checkpoint] | None = None
        self._replacing_with = new_checkpoint

    @property
    def failed(self) -> bool:
        return self.status is CommitStatus.FAILED

    @property
    def in_flight(self) -> bool:
        """A checkpoint is committing in the background."""
        return self._in_flight is not None

    @property
    def held(self) -> int:
        """Events whose outputs wait for the commit in flight."""
        return len(self._held)

    @property
    def holding_back(self) -> bool:
        """So many outputs wait for the commit in flight (``HELD_MAX`` events) that the worker
        must not read new records until it is confirmed."""
        return self._in_flight is not None and len(self._held) >= HELD_MAX

    def release(self, batch: list[Effects]) -> None:
        """Hand outputs of completed events to the open checkpoint; held while one commits
        in the background (they go into the next transaction); dropped when FAILED (they
        belong to work that is rewound) or CLOSED."""
        if self.status is CommitStatus.OPEN:
            self.checkpoint.release(batch)
        elif self._in_flight is not None:
            self._held.extend(batch)

    def poll(self) -> bool | None:
        """Serve producer callbacks; finish a background commit that returned (or overran
        its deadline). None when none finished; else whether it committed (False: FAILED)."""
        if self.status is CommitStatus.CLOSED:
            return None
        self.checkpoint.poll()
        in_flight = self._in_flight
        if in_flight is not None and (in_flight.done or in_flight.overdue(STUCK_GRACE)):
            return self._finish()
        return None

    def settle(self, within: float | None = None) -> bool | None:
        """Wait for a background commit to return and finish it (before anything else
        commits, aborts or releases partitions): until its deadline and grace, or at most
        ``within`` seconds (a commit not returned by then fails, unconfirmed). None when
        none was running; else whether it committed."""
        if self._in_flight is None:
            return None
        self._in_flight.wait(STUCK_GRACE, within)
        return self._finish()

    def commit(
        self,
        states: Iterable[PartitionState],
        timeout: float = FLUSH_TIMEOUT,
        grace: float = STUCK_GRACE,
    ) -> bool:
        """Commit the completed work of ``states`` now, within ``timeout`` seconds and
        ``grace`` more for a client call that overstays it. A background commit still in
        flight is settled first, given the time it began with and this ``grace`` (not the
        longer :data:`STUCK_GRACE`: a stopping worker cannot wait that long for a broker
        that went away). Returns False, committing nothing, when the committer is not OPEN
        or when this checkpoint fails (then it is FAILED)."""
        in_flight = self._in_flight
        if in_flight is not None:
            self.settle(within=max(timeout, in_flight.deadline - time.monotonic()) + grace)
        if self.status is not CommitStatus.OPEN:
            if self.status is CommitStatus.FAILED:
                log.debug("commit refused: the last checkpoint failed and is not rewound yet")
            return False
        self.status = CommitStatus.COMMITTING
        try:
            self.checkpoint.commit(states, timeout, grace)
        except CheckpointFailed as failure:
            self._failed(failure)
            return False
        self.status = CommitStatus.OPEN
        self.commits += 1
        return True

    def commit_in_background(
        self, states: Iterable[PartitionState], timeout: float = FLUSH_TIMEOUT
    ) -> bool:
        """The interval's checkpoint: begun here and finished by :meth:`poll` when the
        checkpoint can commit off the loop thread, else committed now. Nothing new starts
        while one is still committing. Returns False when the committer is (now) FAILED."""
        if self._in_flight is not None:
            return True
        if not self.checkpoint.background:
            return self.commit(states, timeout) or not self.failed
        if self.status is not CommitStatus.OPEN:
            return not self.failed
        self.status = CommitStatus.COMMITTING
        try:
            self._in_flight = self.checkpoint.begin_commit(states, timeout)
        except CheckpointFailed as failure:
            self._failed(failure)
            return False
        if self._in_flight is None:  # nothing to commit
            self.status = CommitStatus.OPEN
        return True

    def _finish(self) -> bool:
        in_flight, self._in_flight = self._in_flight, None
        held, self._held = self._held, []
        assert in_flight is not None
        try:
            self.checkpoint.finish_commit(in_flight)
        except CheckpointFailed as failure:
            self._failed(failure)  # the held outputs belong to work that is rewound
            return False
        self.status = CommitStatus.OPEN
        self.commits += 1
        if held:
            self.checkpoint.release(held)
        return True

    def fail(self, reason: str) -> None:
        """Drop the open checkpoint (lost partitions): abort its transaction; FAILED."""
        self.settle()
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

    def renew(self, new_checkpoint: Callable[[], Checkpoint], timeout: float) -> None:
        """The worker replaced its consumer (the old one failed fatally) and gave up every
        partition uncommitted: abort what is open (within ``timeout``) and build the next
        checkpoint with ``new_checkpoint``, which binds the new consumer. FAILED until
        :meth:`rewound` says the new checkpoint is ready: it starts on a thread, as after a
        fencing, so a broker that is away holds neither the loop nor a SIGTERM."""
        self.settle()
        self.checkpoint.close(timeout)
        self._new_checkpoint = new_checkpoint
        failure = CheckpointFailed(RENEWED, fenced=True)
        failure.reported = True  # nothing of it was refused: no agent is told of anything
        self.failure = failure
        self.status = CommitStatus.FAILED

    @property
    def renewing(self) -> bool:
        """FAILED only because :meth:`renew` waits for the new consumer's checkpoint: no
        checkpoint failed (the work given up was given up on purpose, and said so)."""
        return self.failed and self.failure is not None and self.failure.reason == RENEWED

    def rewound(self) -> bool:
        """Every partition was rewound: accept work again, with a fresh producer if the old
        one was fenced. Returns False while that producer is still starting: it starts on a
        thread, so the worker's loop (and a SIGTERM) never waits for a broker that is away;
        call again a moment later. A start that fails for a reason waiting cannot fix
        (another instance holds the transactional.id, access denied) raises it."""
        if self.status is not CommitStatus.FAILED:
            return True
        if self.failure is not None and self.failure.fenced and not self._replaced():
            return False
        self.failure = None
        self.status = CommitStatus.OPEN
        return True

    def _replaced(self) -> bool:
        """Start replacing the checkpoint (its producer) or see whether it is done."""
        if self._replacing is None:
            self.checkpoint.close(0.5)
            self._start_replacing()
        assert self._replacing is not None
        outcome = self._replacing.outcome
        if outcome is None:
            return False  # still starting
        self._replacing = None
        if self._replacing_with is not self._new_checkpoint:  # built for a replaced consumer
            if isinstance(outcome, Checkpoint):
                outcome.close(0.5)
            self._start_replacing()
            return False
        if isinstance(outcome, BaseException):
            if not getattr(outcome, "retriable", False):
                raise outcome
            # The broker is away or still loading (it may take minutes after a restart):
            # keep trying for as long as it takes, as the consumer does.
            log.warning("the new producer cannot start transactions yet (%s); trying again",
                        outcome)  # fmt: skip
            self._start_replacing()
            return False
        self.checkpoint = outcome
        self._on_new_checkpoint(outcome)
        return True

    def _start_replacing(self) -> None:
        self._replacing_with = self._new_checkpoint
        self._replacing = OnThread(self._new_checkpoint, "streamer-new-producer")

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Abort what is still open and flush the producer, within ``timeout``."""
        if self.status is CommitStatus.CLOSED:
            return
        self.settle()
        self.status = CommitStatus.CLOSED
        self.checkpoint.close(timeout)
