"""The faults :class:`~streamer.testing.faults.FaultyBackend` can inject: what each one
matches and when it fires (see :mod:`streamer.testing.faults` for how the wrapped clients
apply them). Split from the wrappers so each module stays readable on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from confluent_kafka import KafkaError

TransactionFailureKind = Literal["timeout", "abortable", "fenced"]
RecordMatch = Callable[[bytes | None, bytes | None], bool]


class Fault:
    """When a fault fires (see the module docstring): on the ``nth`` matching call and the
    ``times - 1`` after it (``None``: every one from then on), once ``cue`` is set."""

    def __init__(
        self, *, nth: int = 1, times: int | None = 1, cue: threading.Event | None = None
    ) -> None:
        if nth < 1 or (times is not None and times < 1):
            raise ValueError("nth and times count from 1")
        self.nth = nth
        self.times = times
        self.cue = cue
        self.fired = threading.Event()
        self.count = 0  # how many times it fired
        self.seen = 0  # matching calls counted (after the cue)
        self._lock = threading.Lock()

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


class DeliveryFailure(Fault):
    """A record produced to ``topic`` (counted per backend, over all its producers; only
    those ``match(key, value)`` accepts, if given) is refused with ``code``: it is not
    written, the per-record ``on_delivery`` callback (else the producer's configured
    ``on_delivery``) gets the error at the next ``poll``/``flush``, and an open transaction
    becomes abortable (its next ``send_offsets_to_transaction``/``commit_transaction``
    raises an error with ``txn_requires_abort()``)."""

    def __init__(
        self,
        topic: str,
        *,
        code: int = KafkaError.MSG_SIZE_TOO_LARGE,
        match: RecordMatch | None = None,
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.topic = topic
        self.code = code
        self.match = match

    def applies(self, topic: str, key: bytes | None, value: bytes | None) -> bool:
        return topic == self.topic and (self.match is None or self.match(key, value))


class TransactionFailure(Fault):
    """``commit_transaction`` (``call="commit"``) or ``send_offsets_to_transaction``
    (``call="send_offsets"``) fails without reaching the broker:

    - ``"timeout"``: ``_TIMED_OUT``, retriable; the transaction stays open and calling
      the method again carries on;
    - ``"abortable"``: ``txn_requires_abort()``; the transaction must be aborted;
    - ``"fenced"``: ``_FENCED``, fatal; the producer is unusable from then on (every later
      transactional call raises the same error) and its open transaction is aborted, as
      the broker does when a newer producer fences it.
    """

    def __init__(
        self,
        kind: TransactionFailureKind,
        *,
        call: Literal["commit", "send_offsets"] = "commit",
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.kind = kind
        self.call = call

    def error(self) -> KafkaError:
        return transaction_error(self.kind, f"injected {self.kind} failure of {self.call}")


class OffsetCommitFailure(Fault):
    """A consumer's ``commit`` (of a group whose id starts with ``group``, if given) raises
    ``KafkaException`` with ``code`` (default: a rebalance is in progress)."""

    def __init__(
        self,
        *,
        code: int = KafkaError.REBALANCE_IN_PROGRESS,
        group: str | None = None,
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.code = code
        self.group = group


class ConsumeFailure(Fault):
    """``consume``/``poll`` of a consumer whose ``group.id`` starts with ``group`` returns
    one error message with ``code`` (for an assigned partition, when it has one) instead
    of records; with ``raises=True`` it raises ``KafkaException`` instead. ``fatal`` marks
    the error fatal."""

    def __init__(
        self,
        group: str,
        *,
        code: int = KafkaError._TRANSPORT,
        raises: bool = False,
        fatal: bool = False,
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.group = group
        self.code = code
        self.raises = raises
        self.fatal = fatal

    def error(self) -> KafkaError:
        return KafkaError(self.code, "injected consumer error", fatal=self.fatal)


class WatermarkTimeout(Fault):
    """``get_watermark_offsets`` of a consumer whose ``group.id`` starts with ``group``
    raises ``KafkaException(_TIMED_OUT)``, as when the broker does not answer in time."""

    def __init__(
        self,
        group: str,
        *,
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.group = group


class CommittedFailure(Fault):
    """``committed`` of a consumer whose ``group.id`` starts with ``group`` raises
    ``KafkaException`` with ``code`` (default ``NOT_COORDINATOR``, retriable), as while
    the group coordinator moves to another broker or restarts."""

    def __init__(
        self,
        group: str,
        *,
        code: int = KafkaError.NOT_COORDINATOR,
        nth: int = 1,
        times: int | None = 1,
        cue: threading.Event | None = None,
    ) -> None:
        super().__init__(nth=nth, times=times, cue=cue)
        self.group = group
        self.code = code

    def error(self) -> KafkaError:
        return KafkaError(self.code, "injected: failed to get committed offsets", retriable=True)


def transaction_error(kind: TransactionFailureKind, reason: str) -> KafkaError:
    """The error librdkafka raises for a transactional call that failed as ``kind``."""
    if kind == "timeout":
        return KafkaError(KafkaError._TIMED_OUT, reason, retriable=True)
    if kind == "abortable":
        return KafkaError(KafkaError._STATE, reason, txn_requires_abort=True)
    return KafkaError(KafkaError._FENCED, reason, fatal=True)
