"""What the hot path touches of a worker's metrics: a lane's :class:`LaneProbe` and the
checkpoint's :class:`CommitTimer`, both handed to their owner when it is built (by
:class:`~streamer.worker.metrics.WorkerMetrics`, or the inert ones when metrics are off).
Kept apart from the registry so lanes and checkpoints need not import it."""

from __future__ import annotations

import sys
import time

from prometheus_client import Counter, Histogram

SAMPLE_EVERY = 16  # one hand-out in this many per lane is timed for the latency histogram


class LaneProbe:
    """One lane's part of its agent's metrics; the lane updates it inline (see the module
    docstring): ``taken`` counts events handed to the agent, ``due`` is the ``taken`` at
    which the next hand-out is timed, ``started`` is non-zero while a timed one runs."""

    __slots__ = ("_counter", "_latency", "due", "reported", "started", "taken")

    def __init__(self, counter: Counter | None, latency: Histogram | None) -> None:
        self.taken = 0
        self.reported = 0  # the part of ``taken`` already added to the counter
        self.started = 0.0
        self.due = 1 if latency is not None else sys.maxsize  # the first hand-out is timed
        self._counter = counter
        self._latency = latency

    def start(self) -> None:
        """A hand-out is timed: note when, and when the next one will be."""
        self.started = time.perf_counter()
        self.due = self.taken + SAMPLE_EVERY

    def stop(self) -> None:
        """The timed event (or batch) completed: observe how long the agent took."""
        elapsed = time.perf_counter() - self.started
        self.started = 0.0
        if self._latency is not None:
            self._latency.observe(elapsed)

    def flush(self) -> None:
        """Add the events handed out since the last flush to the counter."""
        taken = self.taken
        if taken != self.reported and self._counter is not None:
            self._counter.inc(taken - self.reported)
        self.reported = taken


IDLE_PROBE = LaneProbe(None, None)  # lanes start with it; metrics off leaves it there


class CommitTimer:
    """Wraps one checkpoint commit (``with timer:``): observes its duration when it succeeds,
    counts a failure named after the exception when it raises (and never swallows it).
    :meth:`failed` counts failures the checkpoint handles itself."""

    __slots__ = ("_failures", "_histogram", "_started")

    def __init__(self, histogram: Histogram | None, failures: Counter | None) -> None:
        self._histogram = histogram
        self._failures = failures
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._histogram is None:
            return
        if exc_type is None:
            self._histogram.observe(time.perf_counter() - self._started)
        else:
            self.failed(exc_type.__name__)

    def observe(self, started: float) -> None:
        """A commit that began at ``started`` (``time.perf_counter()``) succeeded."""
        if self._histogram is not None:
            self._histogram.observe(time.perf_counter() - started)

    def failed(self, reason: str) -> None:
        if self._failures is not None:
            self._failures.labels(reason).inc()


IDLE_TIMER = CommitTimer(None, None)
