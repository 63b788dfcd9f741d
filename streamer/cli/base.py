"""The root click group and the error handling shared by every subcommand."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from confluent_kafka import KafkaError, KafkaException

from streamer.errors import StreamerError
from streamer.logs import LogFormat, configure_logging


class StreamerGroup(click.Group):
    """A click group that turns StreamerError into one line on stderr (exit 1), and so a
    Kafka request that failed where no code worded it (a ``KafkaException``): the client's
    own words.

    With ``--debug`` the full traceback is shown instead, for bug reports.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamerError as exc:
            if ctx.meta.get("streamer.debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KafkaException as exc:
            if ctx.meta.get("streamer.debug"):
                raise
            err = exc.args[0] if exc.args else None
            what = err.str() if isinstance(err, KafkaError) else str(exc)
            click.echo(f"error: a Kafka request failed: {what} (--debug shows where)", err=True)
            sys.exit(1)


@click.group(cls=StreamerGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--log-level", default="INFO", show_default=True, help="Log level (DEBUG, INFO, WARNING)."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Readable text, or one JSON object per line (time, level, logger, message, partition).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to wait for the broker before failing [setting connect_timeout, default 5].",
)
@click.pass_context
def main(
    ctx: click.Context, debug: bool, log_level: str, log_format: LogFormat, timeout: float | None
) -> None:
    """streamer: stream processing on Apache Kafka with async Python agents."""
    ctx.meta["streamer.debug"] = debug
    ctx.meta["streamer.log_format"] = log_format
    if timeout is not None:
        # Settings are read when the app module builds its App, so the env carries it there.
        os.environ["STREAMER_CONNECT_TIMEOUT"] = str(timeout)
    configure_logging(logging.DEBUG if debug else log_level.upper(), log_format)
