"""Progress bars for long work (recovery, replay, ``offsets reset --reset-state``), via rich.

:func:`bar` yields a function that takes the count done so far, or ``None`` when no bar is
shown; callers then log plain progress lines instead, as they always did. A bar is shown
only when stderr is a terminal and logs are text: piped or captured output, and
``--log-format json``, get lines, never escape codes.

Bars of concurrent work (several table partitions restoring at once, on worker threads)
share one rich ``Progress`` display, started with the first bar and stopped with the last.
While it runs, log records still appear, above the bars: :func:`streamer.logs.configure_logging`
writes to whatever ``sys.stderr`` is at the time, which rich redirects.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Advance(Protocol):
    """Report progress: ``done`` so far (absolute, not a delta), and the total if it moved."""

    def __call__(self, done: int, total: int | None = None) -> None: ...


class RateColumn(ProgressColumn):
    """Items per second, as ``12,345 records/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed:  # too few samples yet: the average so far
            speed = task.completed / task.elapsed
        unit = task.fields.get("unit", "records")
        return Text("" if speed is None else f"{speed:,.0f} {unit}/s", style="cyan")


def enabled() -> bool:
    """A live bar only on a terminal with text logs (JSON logs want lines)."""
    if not sys.stderr.isatty():
        return False
    root = logging.getLogger()
    return not any(getattr(h, "json_logs", False) for h in root.handlers)


_lock = threading.Lock()
_display: Progress | None = None
_users = 0


def _start() -> Progress:
    global _display, _users
    with _lock:
        if _display is None:
            _display = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                RateColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            _display.start()
        _users += 1
        return _display


def _finish(display: Progress, task: TaskID) -> None:
    global _display, _users
    with _lock:
        display.refresh()
        _users -= 1
        if _users == 0 and _display is display:
            display.stop()
            _display = None


@contextmanager
def bar(label: str, total: int | None, unit: str = "records") -> Iterator[Advance | None]:
    """A progress bar for ``label`` with count, rate and ETA, or ``None`` (see module doc)."""
    if not enabled():
        yield None
        return
    display = _start()
    task = display.add_task(label, total=total, unit=unit)

    def advance(done: int, total: int | None = None) -> None:
        if total is not None:
            display.update(task, total=total, completed=done)
        else:
            display.update(task, completed=done)

    try:
        yield advance
    finally:
        _finish(display, task)


__all__ = ["Advance", "bar", "enabled"]
