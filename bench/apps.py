"""The streamer side of each scenario: the app, and a worker driven until the work is done.

These functions run inside the child process (see :mod:`bench.child`). Each builds an App
the way a user would, runs ``Worker(app, handle_signals=False)`` in this process and stops
it when the scenario's condition holds. Timing comes from :class:`bench.common.Progress`,
updated by the agent itself: from the first record processed to the last.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.child import Ctx, Job
from bench.common import Progress, transform
from streamer import App, Stream
from streamer.worker import Worker


class Order(BaseModel):
    """The input of the pydantic scenario: the same JSON as :func:`bench.common.payload`."""

    id: int
    user: str
    amount: float
    currency: str
    ts: float
    tags: list[str]


class Enriched(Order):
    """Its output: what :func:`bench.common.transform` adds."""

    amount_cents: int
    large: bool


def owns_all(worker: Worker, partitions: int) -> bool:
    """The worker owns ``partitions`` partitions and their tables are restored."""
    states = worker._states
    return len(states) == partitions and all(s.ready.is_set() for s in states.values())


def committed_records(worker: Worker) -> int:
    """Records the worker has committed on its source partitions (each starts at offset 0)."""
    return sum(s.committed or 0 for s in worker._states.values())


async def drive(
    app: App,
    done: Callable[[Worker], bool],
    *,
    timeout: float,
    partitions: int,
    on_owned: Callable[[], None] | None = None,
    records: int | None = None,
) -> Worker:
    """Run a worker for ``app`` in this loop until ``done(worker)`` and, given ``records``,
    until it committed that many source records; then stop it cleanly. The second condition
    matters when a checkpoint failed: the agents then processed some events twice, so their
    count of processed events reaches the total before every event is done. ``on_owned`` is
    called once it owns all ``partitions`` (and keeps being called: it must be
    idempotent)."""
    worker = Worker(app, handle_signals=False)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout

    def finished() -> bool:
        return done(worker) and (records is None or committed_records(worker) >= records)

    try:
        while not finished():
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped before the scenario finished")
            if on_owned is not None and owns_all(worker, partitions):
                on_owned()
            if time.monotonic() > deadline:
                raise TimeoutError(f"scenario not done within {timeout:.0f}s")
            await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 120)
    return worker


def _app(job: Job, **settings: Any) -> App:
    params = job.params
    return App(
        params["app_id"],
        brokers=job.brokers,
        state_dir=params["state_dir"],
        consumer_config=dict(params.get("consumer_config") or {}),
        **settings,
    )


def _measured(progress: Progress, **extra: Any) -> dict[str, Any]:
    """The scenario's figures; ``redone``: events processed again after a failed checkpoint
    (the rate then includes that work)."""
    return {
        "processed": progress.count,
        "redone": max(0, progress.count - progress.target),
        "seconds": progress.seconds,
        "rate": progress.rate,
        **progress.cpu(),
        **extra,
    }


def stateless(job: Job, ctx: Ctx) -> dict[str, Any]:
    """JSON (``value_type=dict``) or pydantic (``params["model"]``) pass-through with the
    transform; ``params["delay"]`` seconds awaited per event (the I/O-bound scenario) at
    ``params["concurrency"]`` lanes per partition; ``params["guarantee"]`` (default
    at-least-once); ``params["batch"]``: the agent takes batches (``stream.take(batch,
    within)``)."""
    params = job.params
    n, partitions = int(params["n"]), int(params["partitions"])
    use_model = bool(params.get("model"))
    delay = float(params.get("delay", 0.0))
    app = _app(job, processing_guarantee=params.get("guarantee", "at_least_once"))
    src = app.topic(
        params["src"], key_type=str, value_type=Order if use_model else dict, partitions=partitions
    )
    dst = app.topic(
        params["dst"],
        key_type=str,
        value_type=Enriched if use_model else dict,
        partitions=partitions,
    )
    progress = Progress(n)

    if use_model:

        @app.agent(src, sink=[dst], concurrency=int(params.get("concurrency", 1)))
        async def enrich(stream: Stream) -> AsyncIterator[Enriched]:
            async for event in stream:
                order: Order = event.value
                yield Enriched(
                    id=order.id,
                    user=order.user.upper(),
                    amount=order.amount,
                    currency=order.currency,
                    ts=order.ts,
                    tags=order.tags,
                    amount_cents=round(order.amount * 100),
                    large=order.amount >= 1_000,
                )
                progress.hit()

    elif params.get("batch"):
        size, within = int(params["batch"]), float(params.get("within", 0.01))

        @app.agent(src, sink=[dst])
        async def batches(stream: Stream) -> AsyncIterator[dict[str, Any]]:
            async for batch in stream.take(size, within):
                for event in batch:
                    yield transform(event.value)
                progress.hit(len(batch))

    else:

        @app.agent(src, sink=[dst], concurrency=int(params.get("concurrency", 1)))
        async def passthrough(stream: Stream) -> AsyncIterator[dict[str, Any]]:
            async for event in stream:
                if delay:
                    await asyncio.sleep(delay)
                yield transform(event.value)
                progress.hit()

    asyncio.run(
        drive(
            app,
            lambda _w: progress.done,
            timeout=float(params["timeout"]),
            partitions=partitions,
            on_owned=ctx.ready,
            records=n,
        )
    )
    return _measured(progress)


def count(job: Job, ctx: Ctx) -> dict[str, Any]:
    """Count events per key in a table (``counts[event.key] += 1``), with the processing
    guarantee ``params["guarantee"]``; checks that the counts add up to the events. With
    ``params["dst"]`` each new count is also yielded to that topic (count_emit)."""
    params = job.params
    n, partitions = int(params["n"]), int(params["partitions"])
    app = _app(job, processing_guarantee=params["guarantee"])
    src = app.topic(params["src"], key_type=str, value_type=dict, partitions=partitions)
    counts = app.table("counts", default=int, value_type=int)
    progress = Progress(n)
    total: list[int] = []

    if params.get("dst"):
        # count_emit: the common shape, each new count also goes to a sink topic.
        dst = app.topic(params["dst"], key_type=str, value_type=int, partitions=partitions)

        @app.agent(src, sink=[dst])
        async def count_emit(stream: Stream) -> AsyncIterator[tuple[str, int]]:
            async for event in stream:
                counts[event.key] += 1
                yield event.key, counts[event.key]
                progress.hit()

    else:

        @app.agent(src)
        async def count_keys(stream: Stream) -> None:
            async for event in stream:
                counts[event.key] += 1
                progress.hit()

    def done(worker: Worker) -> bool:
        if not progress.done or committed_records(worker) < n:
            return False
        total.append(sum(counts.values()))  # read while the worker still owns the partitions
        return True

    worker = asyncio.run(drive(app, done, timeout=float(params["timeout"]), partitions=partitions))
    # By name, not by import: what the worker runs is what this scenario reports.
    committer = worker._committer
    checkpoint = type(committer.checkpoint if committer else None).__name__
    return _measured(
        progress,
        counted=total[0] if total else 0,
        checkpoint=checkpoint,
        exactly_once_active=checkpoint not in ("NoneType", "AtLeastOnceCheckpoint"),
    )


def recovery(job: Job, ctx: Ctx) -> dict[str, Any]:
    """A fresh worker (empty state directory) restores the count table from its changelog;
    the time runs from the first partition assigned to the last partition restored (polled
    every 10 ms; the count is ``worker._tables.restored_records``)."""
    params = job.params
    n, partitions = int(params["n"]), int(params["partitions"])
    app = _app(job)
    src = app.topic(params["src"], key_type=str, value_type=dict, partitions=partitions)
    counts = app.table("counts", default=int, value_type=int)

    @app.agent(src)
    async def count_keys(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    shutil.rmtree(Path(params["state_dir"]) / app.id, ignore_errors=True)
    times: dict[str, float] = {}

    def done(worker: Worker) -> bool:  # polled every 10 ms
        now = time.perf_counter()
        if worker._states:
            times.setdefault("assigned", now)
        if worker._tables.restored_records >= n and owns_all(worker, partitions):
            times["restored"] = now
            return True
        return False

    marks = _LogMarks(("streamer.recovery",))  # the per-partition summaries, for the JSON
    try:
        worker = asyncio.run(
            drive(app, done, timeout=float(params["timeout"]), partitions=partitions)
        )
    finally:
        marks.close()
    restored = worker._tables.restored_records
    seconds = max(times["restored"] - times["assigned"], 1e-9)
    return {
        "processed": restored,
        "seconds": seconds,
        "rate": restored / seconds,
        "partition_logs": marks.messages(": restored "),
    }


def backlog(job: Job, ctx: Ctx) -> dict[str, Any]:
    """A slow agent (``params["delay"]`` s per event) over a backlog far larger than memory
    should hold; RSS is sampled for ``params["window"]`` seconds after the first event."""
    params = job.params
    partitions = int(params["partitions"])
    delay, window = float(params["delay"]), float(params["window"])
    app = _app(job)
    src = app.topic(params["src"], key_type=str, value_type=dict, partitions=partitions)
    progress = Progress(int(params["n"]))

    @app.agent(src)
    async def slow(stream: Stream) -> None:
        async for _event in stream:
            await asyncio.sleep(delay)
            progress.hit()

    marks: dict[str, float] = {}

    def done(_w: Worker) -> bool:
        now = time.perf_counter()
        if progress.count and "first" not in marks:
            marks["first"] = now
            marks["rss_first"] = ctx.sampler.sample()
        return "first" in marks and (now - marks["first"] >= window or progress.done)

    asyncio.run(drive(app, done, timeout=float(params["timeout"]), partitions=partitions))
    end = time.perf_counter()
    rss_end = ctx.sampler.sample()
    first = marks["first"]
    during = [(t - first, mb) for t, mb in ctx.sampler.samples if t >= first]
    values = sorted(mb for _, mb in during)
    step = max(len(during) // 40, 1)
    seconds = max(end - first, 1e-9)
    return {
        "processed": progress.count,
        "seconds": seconds,
        "rate": progress.count / seconds,
        "rss_start_mb": round(marks["rss_first"], 1),
        "rss_median_mb": round(values[len(values) // 2], 1),
        "rss_peak_mb": round(values[-1], 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_series": [[round(t, 2), round(mb, 1)] for t, mb in during[::step]],
    }


class _LogMarks(logging.Handler):
    """Collects INFO records of some loggers without printing them."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._loggers = [logging.getLogger(name) for name in names]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.addHandler(self)
            lg.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.removeHandler(self)
            lg.setLevel(level)
        super().close()

    def messages(self, contains: str) -> list[str]:
        """The formatted messages containing ``contains``."""
        return [m for m in (r.getMessage() for r in self.records) if contains in m]
