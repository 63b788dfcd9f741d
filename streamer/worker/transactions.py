"""Exactly-once checkpoints (KIP-447): one transaction per checkpoint for outputs, changelog
records and source offsets.

Released outputs go into the open transaction as they are released (a transaction begins
with the first of them). The checkpoint then:

1. produces one changelog record per changed table key, into the same transaction;
2. sends the source offsets with ``consumer_group_metadata()``, so a zombie from an older
   group generation is fenced by the broker. A transaction with no new offsets (an idle
   window closing, a timer's send) still sends the owned partitions' committed offsets:
   the generation check then fences it too;
3. commits the transaction; a retriable failure (a timeout) is retried by calling commit
   again until the checkpoint's deadline, never by sleeping on the event loop;
4. writes RocksDB, in one WriteBatch per table partition with the changelog and source
   offsets: local state never holds uncommitted data.

Steps 1 and 4 run on the event loop; the round trips of steps 2 and 3 on a thread of their
own (:class:`~streamer.worker.checkpoint.InFlightCommit`), so events keep being processed
while the broker confirms: what a checkpoint covers is fixed when it begins (its offsets, the
table changes released so far), and outputs released meanwhile are held by the committer and
go into the next transaction once this one committed.

Any failure aborts the transaction and raises
:class:`~streamer.worker.checkpoint.CheckpointFailed` (``fenced=True`` when the producer
is fenced or failed fatally and must be replaced). The committer then makes sure nothing
of the aborted checkpoint is committed later by another path.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import StreamerError
from streamer.kafka.access import access_denied
from streamer.kafka.backend import Consumer, Producer
from streamer.threads import OnThread
from streamer.worker.checkpoint import (
    STORE_WRITE_INTERVAL,
    STUCK_GRACE,
    Checkpoint,
    CheckpointFailed,
    InFlightCommit,
    _error,
)
from streamer.worker.partition import Effects, PartitionState
from streamer.worker.probes import IDLE_TIMER, CommitTimer

log = logging.getLogger("streamer.transactions")

TXN_TIMEOUT = 30.0
INIT_ATTEMPTS = 4  # init_transactions calls (each up to TXN_TIMEOUT) before giving up
ABORT_TIMEOUT = 10.0
RETRY_PAUSE = 0.1  # seconds between commit attempts that fail at once


class ProducerFenced(StreamerError):
    """The transactional producer cannot start (its transactional.id is in use or refused).
    ``retriable``: it only timed out (the broker away or still loading), so trying again
    later may succeed."""

    retriable = False


class ExactlyOnceCheckpoint(Checkpoint):
    """Owns the transactional producer's transaction boundaries. Commits in the
    background (:meth:`begin_commit` / :meth:`finish_commit`): the event loop processes
    the next events while the broker confirms a transaction."""

    background = True

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        brokers: str,
        *,
        timer: CommitTimer = IDLE_TIMER,
        produced: dict[str, int] | None = None,
    ) -> None:
        super().__init__(consumer, producer, brokers, timer=timer, produced=produced)
        self._in_transaction = False
        # A failure seen while releasing (the transaction cannot commit any more).
        self._doomed: KafkaError | None = None
        # A blocking transactional call that overstayed its timeout: the producer is unusable.
        self._stuck = False

    def release(self, batch: list[Effects]) -> None:
        if self._doomed is not None:
            return  # the transaction cannot commit; the next checkpoint aborts it
        try:
            self._begin()
        except KafkaException as exc:
            self._doomed = _error(exc)
            return
        super().release(batch)

    def _begin(self) -> None:
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

    def _pending_work(self) -> bool:
        return (
            self._in_transaction
            or self._doomed is not None
            or bool(self.refusals)
            or self.broken is not None
        )

    def commit(
        self,
        states: Iterable[PartitionState],
        timeout: float = TXN_TIMEOUT,
        grace: float = STUCK_GRACE,
    ) -> None:
        """Commit at once: :meth:`begin_commit`, wait (``grace`` past ``timeout`` at most),
        :meth:`finish_commit`."""
        commit = self.begin_commit(states, timeout)
        if commit is not None:
            commit.wait(grace)
            self.finish_commit(commit)

    def begin_commit(
        self, states: Iterable[PartitionState], timeout: float = TXN_TIMEOUT
    ) -> InFlightCommit | None:
        """Steps 1 and 2 on the loop thread: what this checkpoint covers is fixed here (the
        completed offsets, the changelog records of the changes released so far, taken out
        of each table partition's ``dirty``); the broker round trips (offsets, commit) then
        run on their own thread."""
        states = list(states)
        due, parts = self._work(states)
        if not (due or parts or self._pending_work()):
            return None
        deadline = time.monotonic() + timeout
        try:
            if self._stuck:
                raise KafkaException(
                    KafkaError(KafkaError._FATAL, "the producer is stuck", fatal=True)
                )
            if self.broken is not None:  # fatal: _failed gives the producer up
                raise KafkaException(self.broken)
            if self._doomed is not None:
                raise KafkaException(self._doomed)
            if self.refusals:  # a delivery failed: the transaction can only abort
                raise KafkaException(self.refusals[0][1])
            self._begin()
            self._produce_changelogs(parts)
            offsets = [TopicPartition(s.topic, s.partition, offset) for s, offset in due]
            if not offsets:  # still fence a zombie: see step 2 of the module docstring
                offsets = [
                    TopicPartition(s.topic, s.partition, s.committed)
                    for s in states
                    if s.committed is not None
                ]
            metadata = self._consumer.consumer_group_metadata() if offsets else None
        except KafkaException as exc:
            self.timer.failed(CheckpointFailed.__name__)
            raise self._failed(exc) from exc
        written = self._take_dirty(parts)

        def round_trips() -> None:
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, metadata, _left(deadline))
            self._commit_transaction(deadline)

        return InFlightCommit(round_trips, due, written, deadline)

    def finish_commit(self, commit: InFlightCommit) -> None:
        """Steps 3 and 4 on the loop thread, once the round trips returned: the outcome,
        then RocksDB. A commit that has not returned (past its deadline and grace, or when
        the caller could wait no longer) gives the producer up (see :meth:`_give_up`): the
        failure is ``unconfirmed``, as the broker may still commit it."""
        if not commit.done:
            cut_short = time.monotonic() < commit.deadline + STUCK_GRACE
            given_up = self._give_up("committing the transaction", cut_short=cut_short)
            self.timer.failed(CheckpointFailed.__name__)
            failure = self._failed(given_up)
            failure.unconfirmed = True
            raise failure from given_up
        try:
            error = commit.outcome()
            if error is not None:
                raise error
        except KafkaException as exc:
            self.timer.failed(CheckpointFailed.__name__)
            raise self._failed(exc) from exc
        self._in_transaction = False
        changelog = self._changelog_failure()
        if changelog is not None:  # cannot happen once committed; kept as a guard
            self.timer.failed(CheckpointFailed.__name__)
            raise changelog
        self.timer.observe(commit.started)
        self.refusals.clear()  # purged or retried records of a committed transaction
        for state, offset in commit.due:
            state.committed = offset
        source = {s.partition: offset for s, offset in commit.due}
        self._apply_tables(commit.written, 1, source, every=STORE_WRITE_INTERVAL)

    def _commit_transaction(self, deadline: float) -> None:
        """On the commit's thread: commit, calling again while librdkafka says the commit
        is not confirmed yet (it resumes the same commit) until ``deadline``."""
        warned = False
        while True:
            started = time.monotonic()
            try:
                self._producer.commit_transaction(_left(deadline))
                return
            except KafkaException as exc:
                err = _error(exc)
                if not err.retriable() or err.txn_requires_abort() or _left(deadline) <= 0.1:
                    raise
                if not warned:
                    log.warning("commit of transaction not confirmed yet (%s); retrying until "
                                "%.0fs have passed", err.str(), _left(deadline))  # fmt: skip
                    warned = True
                if time.monotonic() - started < RETRY_PAUSE:
                    # It failed at once: serve delivery reports a moment rather than spin.
                    self._producer.poll(min(RETRY_PAUSE, _left(deadline)))

    def _give_up(self, what: str, *, cut_short: bool = False) -> KafkaException:
        """A blocking transactional call that has not returned long past its timeout:
        librdkafka can block in ``send_offsets_to_transaction`` far past it once the group
        coordinator it cached went away (a broker restart; confluentinc/librdkafka#5456,
        #5511); or one the caller cannot wait for any longer (``cut_short``: a stopping
        worker). The producer is given up (fenced, so a fresh one replaces it if the worker
        goes on) and its thread left to return whenever it does."""
        self._stuck = True
        self._in_transaction = False
        if cut_short:
            log.warning(
                "%s was not confirmed in the time the stop allows; giving it up (the broker "
                "commits it if the commit reached it, else aborts it)",
                what,
            )
            return KafkaException(
                KafkaError(KafkaError._FENCED, f"{what} not confirmed in time", fatal=True)
            )
        log.error(
            "%s has not returned %.0fs after its timeout; giving this producer up and "
            "starting a fresh one (the open transaction is aborted by the broker)",
            what, STUCK_GRACE,
        )  # fmt: skip
        return KafkaException(
            KafkaError(KafkaError._FENCED, f"{what} stuck past its timeout", fatal=True)
        )

    def abort(self, reason: str) -> None:
        """Abort the open transaction, if any (lost partitions). Raises CheckpointFailed
        with ``fenced=True`` when the producer cannot even abort."""
        self._doomed = None
        self.refusals.clear()
        if not self._in_transaction:
            return
        log.warning("aborting the open transaction: %s", reason)
        self._abort_transaction(reason)

    def _failed(self, exc: KafkaException) -> CheckpointFailed:
        """Abort after ``exc`` and say how the checkpoint failed."""
        err = _error(exc)
        self._doomed = None
        changelog = self._changelog_failure()
        refusals = self._take_refusals()
        fatal = changelog.fatal if changelog is not None else None
        if err.fatal() or err.code() in _FENCED:
            self._in_transaction = False
            return CheckpointFailed(
                f"the transactional producer was fenced or failed fatally ({err.str()}); it "
                "is replaced",
                refusals=refusals,
                fenced=True,
                fatal=fatal,
            )
        try:
            self._abort_transaction(err.str())
        except CheckpointFailed as failed:
            failed.refusals, failed.fatal = refusals, fatal
            return failed
        return CheckpointFailed(f"transaction aborted ({err.str()})", refusals=refusals,
                                fatal=fatal)  # fmt: skip

    def _abort_transaction(self, reason: str) -> None:
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self._bounded(self._producer.abort_transaction, ABORT_TIMEOUT)
        except KafkaException as exc:
            # A producer that cannot even abort is unusable: it is replaced.
            raise CheckpointFailed(
                f"aborting the transaction ({reason}) failed: {_error(exc).str()}", fenced=True
            ) from exc
        finally:
            self._retire_reports()  # what reports now is the aborted records' purges

    def _bounded(self, call: Callable[..., Any], *args: Any) -> None:
        """Make a blocking transactional call (abort), but never wait much longer than its
        own timeout (the last argument): see :meth:`_give_up`."""
        if self._stuck:
            raise KafkaException(KafkaError(KafkaError._FATAL, "the producer is stuck", fatal=True))
        timeout = float(args[-1])
        blocking = OnThread(lambda: call(*args), "streamer-txn")
        if not blocking.join(timeout + STUCK_GRACE):
            raise self._give_up(getattr(call, "__name__", "a transactional call"))
        blocking.result()

    def close(self, timeout: float = ABORT_TIMEOUT) -> None:
        if self._stuck:  # any call could block again: leave it to the broker's timeout
            return
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._producer.abort_transaction(max(0.1, timeout))
            except KafkaException as exc:
                log.warning("aborting the last transaction on close failed: %s", exc)
        try:
            self._producer.flush(min(timeout, 5.0))
        except KafkaException as exc:  # a fenced producer has nothing left to deliver
            log.debug("flushing the producer on close: %s", exc)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


_FENCED: set[Any] = {
    getattr(KafkaError, name)
    for name in (
        "_FENCED",
        "PRODUCER_FENCED",
        "INVALID_PRODUCER_EPOCH",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    )
    if hasattr(KafkaError, name)
}


def init_transactions(producer: Producer, transactional_id: str, brokers: str) -> None:
    """Register the transactional.id (fencing any predecessor with the same id).

    A retriable failure (``_TIMED_OUT``: the coordinator is still aborting a predecessor's
    open transaction, as after a broker restart or a producer given up) is tried again, as
    librdkafka documents, up to ``INIT_ATTEMPTS`` times; then, or on any other failure,
    :class:`ProducerFenced` names the id and the brokers.

    A producer this gives up on is closed before the error is raised: its last
    ``InitProducerId`` may still be on its way (librdkafka carries a timed-out init on in
    the background), and landing after the next producer with the same id registered, it
    would fence that one. Merely dropped, the producer lives on in the error's traceback."""
    try:
        _init_transactions(producer, transactional_id, brokers)
    except BaseException:
        _close_abandoned(producer, transactional_id)
        raise


def _init_transactions(producer: Producer, transactional_id: str, brokers: str) -> None:
    for attempt in range(1, INIT_ATTEMPTS + 1):
        try:
            producer.init_transactions(TXN_TIMEOUT)
            return
        except KafkaException as exc:
            denied = access_denied(exc, operation="Write", transactional_id=transactional_id)
            if denied is not None:
                raise denied from None
            err = _error(exc)
            if not err.retriable() or attempt == INIT_ATTEMPTS:
                tries = f" (tried {attempt} times)" if attempt > 1 else ""
                fenced = ProducerFenced(
                    f"cannot start transactions as {transactional_id!r} on {brokers}{tries}: "
                    f"{err.str()}"
                )
                fenced.retriable = err.retriable() and not err.fatal()
                raise fenced from exc
            log.warning(
                "starting transactions as %r on %s is not confirmed yet (%s); trying again "
                "(attempt %d of %d)",
                transactional_id, brokers, err.str(), attempt + 1, INIT_ATTEMPTS,
            )  # fmt: skip


def _close_abandoned(producer: Producer, transactional_id: str) -> None:
    """Destroy a producer whose transactions never started, quietly: confluent-kafka warns
    that it could not abort the init still in progress, which is the point of closing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            producer.close()
        except Exception as exc:  # closing is best effort; the start's failure is the news
            log.debug("closing the producer of %r that did not start: %s", transactional_id, exc)
