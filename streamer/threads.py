"""Work on a daemon thread whose result the caller collects later, without blocking on it.

Used where a blocking client call must not hold the event loop or a signal: a transaction's
round trips, a new producer starting, a status refresh. A daemon thread, because one that
never returns (a client stuck on a broker) must not hold the process at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class OnThread(Generic[T]):
    """``work()`` started on a daemon thread named ``name``."""

    __slots__ = ("_outcome", "_thread")

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._outcome: list[T | BaseException] = []

        def run() -> None:
            try:
                self._outcome.append(work())
            except BaseException as exc:  # handed to the caller by outcome
                self._outcome.append(exc)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return bool(self._outcome)

    @property
    def outcome(self) -> T | BaseException | None:
        """What ``work()`` returned, or what it raised; None while it runs."""
        return self._outcome[0] if self._outcome else None

    def join(self, timeout: float | None) -> bool:
        """Wait at most ``timeout`` seconds for it to return; whether it did."""
        self._thread.join(timeout)
        return self.done

    def result(self) -> T:
        """What it returned, or raise what it raised (only once :attr:`done`)."""
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
