"""Terminal output shared by the commands: aligned tables, through ``rich``.

Tables have no borders, so they read the same on a terminal, in a pipe and in a test that
splits lines on whitespace: the header on its own line, then one line per row, numeric
columns right-aligned. On a terminal the header is bold and the table fits the window; in a
pipe nothing is wrapped or styled and trailing blanks are trimmed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table


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
