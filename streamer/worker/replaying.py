"""Running a replay (see :mod:`streamer.worker.replay` for what a replay is): a worker in
replay mode over a :class:`ReplayPlan`, with its progress shown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamer.app import App
from streamer.kafka.backend import Backend
from streamer.progress import Advance, bar
from streamer.settings import Settings
from streamer.worker.replay import OutputSink, ReplayPlan, ReplaySummary
from streamer.worker.runner import Worker

log = logging.getLogger("streamer.replay")


async def report_progress(
    plan: ReplayPlan, counter: Callable[[], int], every: float, advance: Advance | None = None
) -> None:
    """Until cancelled: move ``advance`` (a progress bar) ten times a second, or without
    one log the replay's progress every ``every`` seconds."""
    started = time.monotonic()
    while True:
        if advance is not None:
            await asyncio.sleep(0.1)
            advance(counter())
            continue
        await asyncio.sleep(every)
        done = counter()
        rate = done / (time.monotonic() - started)
        log.info("replayed %d of %d records (%.0f/s)", done, plan.total, rate)


async def run_replay(
    app: App,
    plan: ReplayPlan,
    *,
    settings: Settings | None = None,
    backend: Backend | None = None,
    dry_run: OutputSink | None = None,
) -> ReplaySummary:
    """Run ``plan`` to its end and return what happened (the worker's own loop, replay
    mode), with ``settings`` and clients from ``backend`` (default: the app's). With
    ``dry_run`` outputs are handed to it instead of being sent."""
    worker = Worker(
        app, settings=settings, backend=backend, handle_signals=False, replay=plan,
        dry_run=dry_run,
    )  # fmt: skip
    started = time.monotonic()
    with bar(f"replaying {plan.topic}", plan.total) as advance:
        progress = asyncio.ensure_future(
            report_progress(plan, lambda: worker.stats.records, 2.0, advance)
        )
        try:
            await worker.run()
        finally:
            progress.cancel()
            if advance is not None:
                advance(worker.stats.records)
    stats = worker.stats
    summary = ReplaySummary(stats.records, stats.outputs, stats.errors, time.monotonic() - started)
    log.info(
        "replay done: %d records, %d outputs%s, %d errors in %.1fs",
        summary.records,
        summary.outputs,
        " (dry run: not sent)" if dry_run else "",
        summary.errors,
        summary.seconds,
    )
    return summary
