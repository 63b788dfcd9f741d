"""Fault injection: a backend that makes chosen Kafka calls fail, on cue, the way a real
failure would.

:class:`FaultyBackend` wraps any :class:`~streamer.kafka.backend.Backend` (the real
confluent-kafka one, or the in-memory one) and hands out clients that behave exactly like
the inner ones, except where a *fault* of its plan fires::

    too_large = DeliveryFailure("orders-out", nth=3, code=KafkaError.MSG_SIZE_TOO_LARGE)
    backend = FaultyBackend(ConfluentBackend(), too_large)
    task = asyncio.create_task(Worker(app, backend=backend).run())
    assert too_large.wait(30)           # the third record to orders-out was refused

Every fault counts the calls it matches; it fires on the ``nth`` of them and on the
``times - 1`` matching calls after it (``times=None``: on every one from then on). With
``cue`` (a :class:`threading.Event`) it ignores every call until the test sets the event.
When it fires it sets :attr:`Fault.fired` and adds to :attr:`Fault.count`, so a test can
wait for it. The errors are real ``confluent_kafka.KafkaError`` instances, with the flags
(``retriable``, ``fatal``, ``txn_requires_abort``) librdkafka would set, raised as
``KafkaException`` or delivered as error messages and delivery reports, so the code under
test cannot tell them from the real thing. Faults are thread-safe (recovery and standby
consumers run in worker threads) and may be added while the clients run (:meth:`add`).

The faults:

- :class:`DeliveryFailure`: a produced record (the ``nth`` to a topic, or matching a
  predicate) is refused by "the broker": it is not written; its delivery callback gets the
  error at the next ``poll``/``flush``; inside a transaction, the transaction becomes
  abortable.
- :class:`TransactionFailure`: ``commit_transaction``, ``send_offsets_to_transaction`` or
  ``init_transactions`` fails as a timeout (retriable), an abortable error, or fencing
  (fatal).
- :class:`SlowTransaction`: ``commit_transaction`` or ``send_offsets_to_transaction``
  returns only when the test releases it (then goes on, or fails).
- :class:`OffsetCommitFailure`: a consumer's ``commit`` is refused.
- :class:`ConsumeFailure`: ``consume``/``poll`` returns an error message, or raises.
- :class:`WatermarkTimeout`: ``get_watermark_offsets`` times out.
- :class:`Redelivery`: a consumer's ``consume`` repeats the records of its previous call.
- :class:`StuckClose`: a consumer's ``close`` waits until the test releases it.
- :class:`CommittedFailure`: reading the group's committed offsets fails (the group
  coordinator moving, as while a broker restarts).

Consumer faults choose their consumers by ``group.id`` prefix: the worker's group is the
app's ``group_id``; table restores use ``streamer-restore-<table>[<partition>]``, standby
replicas ``streamer-standby-<app id>``.

The fault kinds themselves are declared in :mod:`streamer.testing.fault_kinds` and
re-exported here.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as _Message

from streamer.kafka.backend import Admin, Backend, Config, Consumer, Message, Producer
from streamer.testing.fault_kinds import (
    CommittedFailure,
    ConsumeFailure,
    DeliveryFailure,
    Fault,
    OffsetCommitFailure,
    Redelivery,
    SlowTransaction,
    StuckClose,
    TransactionFailure,
    WatermarkTimeout,
    transaction_error,
)


class FaultyBackend:
    """A :class:`~streamer.kafka.backend.Backend` whose clients are ``inner``'s, failing
    where a fault of its plan fires (see the module docstring)."""

    def __init__(self, inner: Backend, *faults: Fault) -> None:
        self.inner = inner
        self._faults: list[Fault] = list(faults)
        self._lock = threading.Lock()
        # Producers whose init timed out with its request still on its way
        # (``TransactionFailure(in_flight=True)``): (transactional.id, the producer).
        self._inits_in_flight: list[tuple[str | None, weakref.ref[FaultyProducer]]] = []

    def add(self, *faults: Fault) -> None:
        """Add faults to the plan (clients already handed out see them too)."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _of(self, kind: type[Fault]) -> list[Any]:
        return [fault for fault in self.faults if isinstance(fault, kind)]

    def _init_in_flight(self, producer: FaultyProducer) -> None:
        with self._lock:
            if not any(ref() is producer for _, ref in self._inits_in_flight):
                self._inits_in_flight.append((producer.transactional_id, weakref.ref(producer)))

    def _land_inits_in_flight(self, registered: FaultyProducer) -> None:
        """``registered`` finished its init: the requests still on their way for its
        transactional.id land now (each fencing it), unless their producer is gone."""
        with self._lock:
            landing = [ref for txn, ref in self._inits_in_flight
                       if txn == registered.transactional_id]  # fmt: skip
            self._inits_in_flight = [(txn, ref) for txn, ref in self._inits_in_flight
                                     if txn != registered.transactional_id]  # fmt: skip
        for ref in landing:
            late = ref()
            # The producer's own retry is its request carrying on, not a second one.
            if late is not None and late is not registered and not late.closed:
                late.inner.init_transactions(60)  # the broker registers the id again

    def consumer(self, config: Config) -> Consumer:
        return FaultyConsumer(self.inner.consumer(config), str(config.get("group.id", "")), self)

    def producer(self, config: Config) -> Producer:
        return FaultyProducer(self.inner.producer(config), config, self)

    def admin(self, config: Config) -> Admin:
        return self.inner.admin(config)

    def check_reachable(self, admin: Admin, brokers: str, timeout: float = 10.0) -> None:
        self.inner.check_reachable(admin, brokers, timeout)

    def __repr__(self) -> str:
        return f"FaultyBackend({self.inner!r}, {', '.join(map(repr, self.faults))})"


class FaultyConsumer:
    """``inner`` with the consumer faults of ``backend`` that select ``group``."""

    def __init__(self, inner: Consumer, group: str, backend: FaultyBackend) -> None:
        self.inner = inner
        self._group = group
        self._backend = backend
        self._assigned: list[TopicPartition] = []
        self._last: list[Message] = []  # what consume() returned last (for Redelivery)

    def _firing(self, kind: type[Fault]) -> Any:
        # Every selected fault counts the call (a list, not a generator), the first applies.
        firing = [
            f
            for f in self._backend._of(kind)
            if self._group.startswith(f.group or "") and f._fire()
        ]
        return firing[0] if firing else None

    def _consume_failure(self) -> list[Message] | None:
        fault: ConsumeFailure | None = self._firing(ConsumeFailure)
        if fault is None:
            return None
        if fault.raises:
            raise KafkaException(fault.error())
        assigned = self._assigned or self.inner.assignment()
        where = assigned[0] if assigned else None
        message: Message = _Message(
            topic=where.topic if where is not None else None,
            partition=where.partition if where is not None else -1,  # -1: no partition
            error=fault.error(),
        )
        return [message]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> Sequence[Message]:
        failed = self._consume_failure()
        if failed is not None:
            return failed
        messages = self.inner.consume(num_messages, timeout)
        if not self._backend._of(Redelivery):
            return messages
        again = self._last if self._last and self._firing(Redelivery) is not None else []
        if messages:
            self._last = [m for m in messages if m.error() is None]
        return [*again, *messages]

    def poll(self, timeout: float = -1) -> Message | None:
        failed = self._consume_failure()
        if failed is not None:
            return failed[0]
        return self.inner.poll(timeout)

    def get_watermark_offsets(
        self, partition: TopicPartition, /, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        if self._firing(WatermarkTimeout) is not None:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "injected: watermark query timed out")
            )
        return self.inner.get_watermark_offsets(partition, timeout=timeout, cached=cached)

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]:
        fault: OffsetCommitFailure | None = self._firing(OffsetCommitFailure)
        if fault is not None:
            raise KafkaException(KafkaError(fault.code, "injected offset commit failure"))
        return self.inner.commit(offsets=offsets, asynchronous=asynchronous)

    # -- the rest passes through -----------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Any = None,
        on_revoke: Any = None,
        on_lost: Any = None,
    ) -> None:
        self.inner.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def assign(self, partitions: list[TopicPartition], /) -> None:
        self._assigned = list(partitions)
        self.inner.assign(partitions)

    def pause(self, partitions: list[TopicPartition], /) -> None:
        self.inner.pause(partitions)

    def resume(self, partitions: list[TopicPartition], /) -> None:
        self.inner.resume(partitions)

    def seek(self, partition: TopicPartition, /) -> None:
        self.inner.seek(partition)

    def committed(
        self, partitions: list[TopicPartition], /, timeout: float = -1
    ) -> list[TopicPartition]:
        fault: CommittedFailure | None = self._firing(CommittedFailure)
        if fault is not None:
            raise KafkaException(fault.error())
        return self.inner.committed(partitions, timeout=timeout)

    def assignment(self) -> list[TopicPartition]:
        return self.inner.assignment()

    def position(self, partitions: list[TopicPartition], /) -> list[TopicPartition]:
        return self.inner.position(partitions)

    def offsets_for_times(
        self, partitions: list[TopicPartition], /, timeout: float = -1
    ) -> list[TopicPartition]:
        return self.inner.offsets_for_times(partitions, timeout=timeout)

    def consumer_group_metadata(self) -> Any:
        return self.inner.consumer_group_metadata()

    def close(self) -> None:
        stuck: StuckClose | None = self._firing(StuckClose)
        if stuck is not None:
            stuck.release.wait(stuck.timeout)
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything else the inner client offers
        return getattr(self.inner, name)


class FaultyProducer:
    """``inner`` with the producer faults of ``backend``."""

    def __init__(self, inner: Producer, config: Config, backend: FaultyBackend) -> None:
        self.inner = inner
        self._backend = backend
        self._on_delivery: Callable[..., Any] | None = config.get("on_delivery") or config.get(
            "delivery.report.cb"
        )
        self.transactional_id: str | None = config.get("transactional.id")
        self.closed = False
        self._lock = threading.Lock()
        self._reports: list[tuple[Callable[..., Any], KafkaError, Message]] = []
        self._abortable: KafkaError | None = None  # a refused record doomed the transaction
        self._fatal: KafkaError | None = None  # fenced: nothing works any more

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        *,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        faults = self._backend._of(DeliveryFailure)
        firing = [f for f in faults if f.applies(topic, key, value) and f._fire()]
        if firing:
            self._refuse(firing[0], topic, key, value, partition, on_delivery)
            return
        self.inner.produce(
            topic,
            value,
            key,
            partition,
            on_delivery=on_delivery,
            timestamp=timestamp,
            headers=headers,
        )

    def _refuse(
        self,
        fault: DeliveryFailure,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        on_delivery: Any,
    ) -> None:
        error = KafkaError(fault.code, "injected: the broker refused the record")
        callback = on_delivery or self._on_delivery
        message: Message = _Message(
            topic=topic, partition=partition, key=key, value=value, error=error
        )
        with self._lock:
            if callback is not None:
                self._reports.append((callback, error, message))
            if self.transactional_id is not None:
                self._abortable = KafkaError(
                    fault.code,
                    f"Failed to deliver a record to {topic}: {error.str()}",
                    txn_requires_abort=True,
                )

    def _serve_reports(self) -> int:
        with self._lock:
            reports, self._reports = self._reports, []
        for callback, error, message in reports:
            callback(error, message)
        return len(reports)

    def poll(self, timeout: float = -1) -> int:
        served = self._serve_reports()
        return served + self.inner.poll(0 if served else timeout)

    def flush(self, timeout: float = -1) -> int:
        self._serve_reports()
        return self.inner.flush(timeout)

    # -- transactions ----------------------------------------------------------------------

    def _transaction_fault(self, call: str) -> None:
        """Raise what a doomed or fenced transaction, or a firing fault, raises (after
        holding the call while a firing :class:`SlowTransaction` says so)."""
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        error: KafkaError | None = None
        for slow in self._backend._of(SlowTransaction):
            if slow.call == call and slow._fire():
                error = slow.hold()
        with self._lock:
            abortable = self._abortable
        if abortable is not None:
            raise KafkaException(abortable)
        if error is None:
            faults = self._backend._of(TransactionFailure)
            firing: list[TransactionFailure] = [f for f in faults if f.call == call and f._fire()]
            if not firing:
                return
            error = firing[0].error()
            if firing[0].in_flight:
                self._backend._init_in_flight(self)
        if error.fatal():
            self._fatal = error
            # What the broker does to a fenced producer's open transaction.
            with contextlib.suppress(KafkaException):
                self.inner.abort_transaction(10)
        raise KafkaException(error)

    def init_transactions(self, timeout: float = -1) -> None:
        self._transaction_fault("init")
        self.inner.init_transactions(timeout)
        self._backend._land_inits_in_flight(self)

    def close(self) -> None:
        self.closed = True
        self.inner.close()

    def begin_transaction(self) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        self.inner.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, /, timeout: float = -1
    ) -> None:
        self._transaction_fault("send_offsets")
        self.inner.send_offsets_to_transaction(offsets, group_metadata, timeout)

    def commit_transaction(self, timeout: float = -1) -> None:
        self._transaction_fault("commit")
        self.inner.commit_transaction(timeout)

    def abort_transaction(self, timeout: float = -1) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        self.inner.abort_transaction(timeout)
        with self._lock:
            self._abortable = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


__all__ = [
    "CommittedFailure",
    "ConsumeFailure",
    "DeliveryFailure",
    "Fault",
    "FaultyBackend",
    "FaultyConsumer",
    "FaultyProducer",
    "OffsetCommitFailure",
    "Redelivery",
    "SlowTransaction",
    "StuckClose",
    "TransactionFailure",
    "WatermarkTimeout",
    "transaction_error",
]
