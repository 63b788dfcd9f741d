"""The faults :class:`~streamer.testing.faults.FaultyBackend` can inject: what each one
matches and when it fires (see :mod:`streamer.testing.faults` for how the wrapped clients
apply them). Split from the wrappers so each module stays readable on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

from confluent_kafka import KafkaError

TransactionFailureKind = Literal["timeout", "abortable", "fenced"]
RecordMatch = Callable[[bytes | None, bytes | None], bool]


@dataclass(kw_only=True, eq=False, repr=False)
class Fault:
    """When a fault fires (see the module docstring): on the ``nth`` matching call and the
    ``times - 1`` after it (``None``: every one from then on), once ``cue`` is set.

    Each kind is a dataclass: what it matches comes first (positional), then keywords;
    ``nth``, ``times`` and ``cue`` are keywords of every kind."""

    nth: int = 1
    times: int | None = 1
    cue: threading.Event | None = None
    fired: threading.Event = field(init=False, default_factory=threading.Event)
    count: int = field(init=False, default=0)  # how many times it fired
    seen: int = field(init=False, default=0)  # matching calls counted (after the cue)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.nth < 1 or (self.times is not None and self.times < 1):
            raise ValueError("nth and times count from 1")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the fault fired once; False after ``timeout`` seconds."""
        return self.fired.wait(timeout)

    def _fire(self) -> bool:
        """Count one matching call; True when the fault fires on it."""
        with self._lock:
            if self.cue is not None and not self.cue.is_set():
                return False
            self.seen += 1
            if self.seen < self.nth:
                return False
            if self.times is not None and self.count >= self.times:
                return False
            self.count += 1
        self.fired.set()
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nth={self.nth}, times={self.times}, fired={self.count})"


@dataclass(eq=False, repr=False)
class DeliveryFailure(Fault):
    """A record produced to ``topic`` (counted per backend, over all its producers; only
    those ``match(key, value)`` accepts, if given) is refused with ``code``: it is not
    written, the per-record ``on_delivery`` callback (else the producer's configured
    ``on_delivery``) gets the error at the next ``poll``/``flush``, and an open transaction
    becomes abortable (its next ``send_offsets_to_transaction``/``commit_transaction``
    raises an error with ``txn_requires_abort()``)."""

    topic: str
    _: KW_ONLY
    code: int = KafkaError.MSG_SIZE_TOO_LARGE
    match: RecordMatch | None = None

    def applies(self, topic: str, key: bytes | None, value: bytes | None) -> bool:
        return topic == self.topic and (self.match is None or self.match(key, value))


@dataclass(eq=False, repr=False)
class TransactionFailure(Fault):
    """``commit_transaction`` (``call="commit"``), ``send_offsets_to_transaction``
    (``call="send_offsets"``) or ``init_transactions`` (``call="init"``) fails without
    reaching the broker:

    - ``"timeout"``: ``_TIMED_OUT``, retriable; the transaction stays open and calling
      the method again carries on;
    - ``"abortable"``: ``txn_requires_abort()``; the transaction must be aborted;
    - ``"fenced"``: ``_FENCED``, fatal; the producer is unusable from then on (every later
      transactional call raises the same error) and its open transaction is aborted, as
      the broker does when a newer producer fences it.

    With ``in_flight=True`` (a ``"timeout"`` of ``call="init"`` only) the timed-out
    request is still on its way, as librdkafka documents for ``init_transactions``: it
    lands, registering the transactional.id again (so whichever producer registered it
    meanwhile is fenced), once another producer of the backend with the same
    transactional.id has finished its own init, unless this producer was closed or
    garbage-collected first (a destroyed client sends nothing more).
    """

    kind: TransactionFailureKind
    _: KW_ONLY
    call: Literal["commit", "send_offsets", "init"] = "commit"
    in_flight: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.in_flight and (self.kind, self.call) != ("timeout", "init"):
            raise ValueError('in_flight is for kind="timeout", call="init" only')

    def error(self) -> KafkaError:
        return transaction_error(self.kind, f"injected {self.kind} failure of {self.call}")


@dataclass(eq=False, repr=False)
class SlowTransaction(Fault):
    """``commit_transaction`` (``call="commit"``) or ``send_offsets_to_transaction``
    (``call="send_offsets"``) does not return before ``release`` is set (at most
    ``timeout`` seconds), as when the broker confirms late; then it goes on, or fails as
    the :class:`TransactionFailure` kind ``then``. The worker keeps processing meanwhile:
    what it does then is what the fault shows."""

    release: threading.Event
    _: KW_ONLY
    call: Literal["commit", "send_offsets"] = "commit"
    then: TransactionFailureKind | None = None
    timeout: float = 60.0

    def hold(self) -> KafkaError | None:
        """Block the call until released; the error it then fails with, if any."""
        self.release.wait(self.timeout)
        if self.then is None:
            return None
        return transaction_error(self.then, f"injected {self.then} failure of {self.call}")


@dataclass(eq=False, repr=False)
class OffsetCommitFailure(Fault):
    """A consumer's ``commit`` (of a group whose id starts with ``group``, if given) raises
    ``KafkaException`` with ``code`` (default: a rebalance is in progress)."""

    _: KW_ONLY
    code: int = KafkaError.REBALANCE_IN_PROGRESS
    group: str | None = None


@dataclass(eq=False, repr=False)
class ConsumeFailure(Fault):
    """``consume``/``poll`` of a consumer whose ``group.id`` starts with ``group`` returns
    one error message with ``code`` (for an assigned partition, when it has one) instead
    of records; with ``raises=True`` it raises ``KafkaException`` instead. ``fatal`` marks
    the error fatal."""

    group: str
    _: KW_ONLY
    code: int = KafkaError._TRANSPORT
    raises: bool = False
    fatal: bool = False

    def error(self) -> KafkaError:
        return KafkaError(self.code, "injected consumer error", fatal=self.fatal)


@dataclass(eq=False, repr=False)
class WatermarkTimeout(Fault):
    """``get_watermark_offsets`` of a consumer whose ``group.id`` starts with ``group``
    raises ``KafkaException(_TIMED_OUT)``, as when the broker does not answer in time."""

    group: str


@dataclass(eq=False, repr=False)
class CommittedFailure(Fault):
    """``committed`` of a consumer whose ``group.id`` starts with ``group`` raises
    ``KafkaException`` with ``code`` (default ``NOT_COORDINATOR``, retriable), as while
    the group coordinator moves to another broker or restarts."""

    group: str
    _: KW_ONLY
    code: int = KafkaError.NOT_COORDINATOR

    def error(self) -> KafkaError:
        return KafkaError(self.code, "injected: failed to get committed offsets", retriable=True)


@dataclass(eq=False, repr=False)
class Redelivery(Fault):
    """``consume`` of a consumer whose ``group.id`` starts with ``group`` hands out the
    records of its previous call again, before the new ones, as a client that went back
    to an older fetch position does (a pause, resume or seek racing a fetch, or a
    position reset while the broker was away)."""

    group: str


@dataclass(eq=False, repr=False)
class StuckClose(Fault):
    """``close`` of a consumer whose ``group.id`` starts with ``group`` does not begin
    before ``release`` is set (at most ``timeout`` seconds), as librdkafka's close of a
    consumer that failed while joining has been seen never to return; then the consumer
    closes, firing its rebalance callbacks on the closing thread."""

    group: str
    release: threading.Event
    _: KW_ONLY
    timeout: float = 120.0


def transaction_error(kind: TransactionFailureKind, reason: str) -> KafkaError:
    """The error librdkafka raises for a transactional call that failed as ``kind``."""
    if kind == "timeout":
        return KafkaError(KafkaError._TIMED_OUT, reason, retriable=True)
    if kind == "abortable":
        return KafkaError(KafkaError._STATE, reason, txn_requires_abort=True)
    return KafkaError(KafkaError._FENCED, reason, fatal=True)
