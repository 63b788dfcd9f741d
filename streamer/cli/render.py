"""Terminal output shared by the commands: aligned tables and progress, through ``rich``.

Tables have no borders, so they read the same on a terminal, in a pipe and in a test that
splits lines on whitespace: the header on its own line, then one line per row, numeric
columns right-aligned. On a terminal the header is bold and the table fits the window; in a
pipe nothing is wrapped or styled and trailing blanks are trimmed.

Progress (:func:`progress`) is a bar with rate and ETA on a terminal; when stderr is not a
terminal, or logs are JSON (``--log-format json``), it is a plain log line at most every few
seconds and at the end, so captured output and log collectors get lines, not escape codes.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

log = logging.getLogger("streamer.progress")

PLAIN_EVERY = 5.0  # seconds between plain progress lines


def _is_numeric(rows: Sequence[Sequence[object]], column: int) -> bool:
    return bool(rows) and all(
        isinstance(row[column], int | float) or row[column] is None for row in rows
    )


def build_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A borderless rich Table: ``None`` cells show as ``-``, numeric columns right-aligned."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, name in enumerate(headers):
        table.add_column(
            str(name), justify="right" if _is_numeric(rows, i) else "left", no_wrap=True
        )
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    return table


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The table as plain text (no styles, no wrapping, trailing blanks trimmed)."""
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, color_system=None, highlight=False).print(
        build_table(headers, rows)
    )
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print the table on stdout: styled on a terminal, plain text otherwise."""
    if sys.stdout.isatty():
        Console(highlight=False).print(build_table(headers, rows))
    else:
        click.echo(render_table(headers, rows))


class Advance(Protocol):
    """Report progress: ``done`` of the total so far (absolute, not a delta)."""

    def __call__(self, done: int, total: int | None = None) -> None: ...


def fancy_progress() -> bool:
    """A live bar only on a terminal with text logs (the root logger's format decides)."""
    if not sys.stderr.isatty():
        return False
    json_logs = any(
        type(h.formatter).__name__ == "JsonFormatter" for h in logging.getLogger().handlers
    )
    return not json_logs


class RateColumn(ProgressColumn):
    """Items per second, as ``12,345 records/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="cyan")


class _PlainProgress:
    """Progress as log lines, at most every :data:`PLAIN_EVERY` seconds, and one at the end."""

    def __init__(self, label: str, total: int | None, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            self.line()

    def line(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        of = f"/{self.total:,}" if self.total is not None else ""
        log.info(
            "%s: %s%s %s (%s/s)", self.label, f"{self.done:,}", of, self.unit,
            f"{self.done / elapsed:,.0f}",
        )  # fmt: skip


@contextmanager
def progress(label: str, total: int | None, unit: str = "records") -> Iterator[Advance]:
    """A progress display for ``label``: yields a function taking the absolute count done
    (and, when it changes, the total). A bar with count, rate and ETA on a terminal; plain
    log lines (at most every :data:`PLAIN_EVERY` seconds, and a last one) otherwise."""
    if not fancy_progress():
        plain = _PlainProgress(label, total, unit)
        yield plain
        plain.line()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)

        def advance(done: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.update(task, completed=done)

        yield advance
