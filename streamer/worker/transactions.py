"""Exactly-once checkpoints (KIP-447): one transaction per checkpoint for outputs, changelog
records and source offsets.

Released outputs go into the open transaction as they are released (a transaction begins
with the first of them). The checkpoint then:

1. produces one changelog record per changed table key, into the same transaction;
2. sends the completed offsets with ``consumer_group_metadata()`` (so a zombie from an older
   group generation is fenced by the broker);
3. commits the transaction (retrying retriable errors within bounds);
4. writes RocksDB, in one WriteBatch per table partition with the changelog and source
   offsets: local state never holds uncommitted data.

An abortable error aborts the transaction and raises :class:`TransactionAborted`: the worker
then rewinds every partition to its committed offset and drops staged state. A fatal error
(fenced by a newer producer with our transactional.id) raises :class:`ProducerFenced`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import StreamerError
from streamer.kafka.backend import Consumer, Producer
from streamer.state.table import TablePartition
from streamer.worker.checkpoint import Checkpoint, Due, TransactionAborted
from streamer.worker.partition import Output

log = logging.getLogger("streamer.transactions")

TXN_TIMEOUT = 30.0
COMMIT_RETRIES = 5


class ProducerFenced(StreamerError):
    """Another producer with this worker's transactional.id took over (or the producer hit a
    fatal error): this producer can do nothing more and must be replaced."""


def _error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


class ExactlyOnceCheckpoint(Checkpoint):
    """Owns the transactional producer's transaction boundaries."""

    def __init__(self, consumer: Consumer, producer: Producer, brokers: str) -> None:
        super().__init__(consumer, producer, brokers)
        self._in_transaction = False
        self._failure: KafkaException | None = None

    def release(self, outputs: list[Output]) -> None:
        if self._failure is not None:
            return  # the transaction is doomed; the next commit aborts it
        try:
            self._begin()
            super().release(outputs)
        except KafkaException as exc:
            self._failure = exc

    def _begin(self) -> None:
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

    def _pending_work(self) -> bool:
        return self._in_transaction or self._failure is not None

    def _commit(self, due: Due, parts: list[TablePartition]) -> None:
        if self._failure is not None:
            self._abort(self._failure)
        try:
            self._begin()
            self._produce_changelogs(parts)
            if due:
                offsets = [TopicPartition(s.topic, s.partition, offset) for s, offset in due]
                self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), TXN_TIMEOUT
                )
            self._commit_transaction()
        except KafkaException as exc:
            self._abort(exc)
        for state, offset in due:
            state.committed = offset
        self._apply_tables(parts, 1, {s.partition: offset for s, offset in due})

    def _commit_transaction(self) -> None:
        for attempt in range(COMMIT_RETRIES):
            try:
                self._producer.commit_transaction(TXN_TIMEOUT)
                self._in_transaction = False
                return
            except KafkaException as exc:
                err = _error(exc)
                if err is None or not err.retriable() or attempt == COMMIT_RETRIES - 1:
                    raise
                log.warning("commit of transaction failed (%s); retrying", err.str())
                time.sleep(0.1 * (attempt + 1))

    def abort(self, reason: str) -> None:
        """Abort the open transaction, if any (lost partitions, shutdown after failure)."""
        if not self._in_transaction and self._failure is None:
            return
        log.warning("aborting the open transaction: %s", reason)
        self._abort_transaction()

    def _abort(self, exc: KafkaException) -> None:
        err = _error(exc)
        if err is not None and (err.fatal() or err.code() in _FENCED):
            self._in_transaction = False
            self._failure = None
            raise ProducerFenced(
                f"the transactional producer was fenced or failed fatally ({err.str()}); "
                "it is replaced and every partition rewinds to its committed offset"
            ) from exc
        log.warning(
            "transaction aborted (%s); every partition rewinds to its committed offset",
            err.str() if err is not None else exc,
        )
        self._abort_transaction()
        raise TransactionAborted(str(exc)) from exc

    def _abort_transaction(self) -> None:
        self._failure = None
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._producer.abort_transaction(TXN_TIMEOUT)
            except KafkaException as exc:
                # A producer that cannot even abort is unusable: replace it.
                raise ProducerFenced(f"aborting the transaction failed: {exc}") from exc

    def close(self) -> None:
        if self._in_transaction:
            try:
                self._producer.abort_transaction(TXN_TIMEOUT)
            except KafkaException as exc:
                log.warning("aborting the last transaction on close failed: %s", exc)
        self._producer.flush(5)


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
    """Register the transactional.id (fencing any predecessor with the same id)."""
    try:
        producer.init_transactions(TXN_TIMEOUT)
    except KafkaException as exc:
        raise ProducerFenced(
            f"cannot start transactions as {transactional_id!r} on {brokers}: {exc}"
        ) from exc
