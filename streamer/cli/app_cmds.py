"""`streamer worker` and `streamer replay`: run an app, or run it over a range of a topic."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from streamer.cli.client_config import client_options, load_cli_app
from streamer.logs import label_process
from streamer.ops.processes import Supervisor, child_argv, child_settings, parse_processes
from streamer.ops.replay import replay as run_replay_of
from streamer.worker import run_worker


@click.command()
@click.argument("app_path", metavar="APP")
@click.option(
    "--instance",
    default=None,
    help="Stable worker identity (static membership; with exactly-once, the "
    "transactional.id suffix, so a restart fences its predecessor at once).",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus), /health and /ready on this port.",
)
@click.option(
    "--web-host",
    default=None,
    help="Address the web endpoints listen on (default 127.0.0.1; 0.0.0.0 for every "
    "interface, as in a container).",
)
@click.option(
    "--processes",
    default="1",
    metavar="N|auto",
    help="Run N worker processes of the app (auto: one per core), each a member of its "
    "group with its own instance id (<instance>-<i>), state directory "
    "(<state_dir>/process-<i>) and web port (<port>+i); a child that dies is restarted, "
    "SIGTERM stops them all.",
)
@click.option("--process-index", type=int, default=None, hidden=True)  # set by --processes
@client_options
def worker(
    app_path: str,
    instance: str | None,
    web_port: int | None,
    web_host: str | None,
    processes: str,
    process_index: int | None,
) -> None:
    """Run APP (module, module:attribute, or path/to/app.py[:attribute]) until SIGINT or
    SIGTERM: in-flight events finish, offsets are committed, the consumer leaves the group."""
    if instance:
        # Settings are read when the app module builds its App, so set it first.
        os.environ["STREAMER_INSTANCE_ID"] = instance
    if web_port is not None:
        os.environ["STREAMER_WEB_PORT"] = str(web_port)
    if web_host is not None:
        os.environ["STREAMER_WEB_HOST"] = web_host
    count = parse_processes(processes)
    if count > 1 and process_index is None:
        # Load the app once here: a bad path or setting fails now, in one line, not N times.
        app = load_cli_app(app_path)
        supervisor = Supervisor(
            count,
            lambda index: child_argv(sys.argv[1:], index),
            stop_timeout=app.settings.shutdown_timeout,
        )
        sys.exit(supervisor.run())
    app = load_cli_app(app_path)
    if process_index is not None:
        label_process(f"process-{process_index}")
        app.settings = child_settings(app.settings, process_index)
    run_worker(app)


@click.command()
@click.argument("app_path", metavar="APP")
@click.option("--topic", required=True, help="The topic to replay (an agent must read it).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--from-offset", type=int, default=None, help="First offset to replay.")
@click.option("--from-datetime", default=None, help="Replay from the first record at this time.")
@click.option("--to-offset", type=int, default=None, help="Last offset to replay (inclusive).")
@click.option("--to-datetime", default=None, help="Stop before the first record at this time.")
@click.option("--agent", default=None, help="Only this agent (default: every reader).")
@click.option("--dry-run", is_flag=True, help="Send outputs nowhere; print them.")
@client_options
def replay(
    app_path: str,
    topic: str,
    partitions: tuple[int, ...],
    from_offset: int | None,
    from_datetime: str | None,
    to_offset: int | None,
    to_datetime: str | None,
    agent: str | None,
    dry_run: bool,
) -> None:
    """Run APP's agents over a range of TOPIC without touching the group's offsets."""
    app = load_cli_app(app_path)

    def show(output: tuple[str, bytes | None, bytes | None, object]) -> None:
        topic_name, key, value, _ = output
        click.echo(f"{topic_name}\tkey={_text(key)}\tvalue={_text(value)}")

    summary = asyncio.run(
        run_replay_of(
            app,
            topic,
            partitions=list(partitions) or None,
            from_offset=from_offset,
            from_datetime=from_datetime,
            to_offset=to_offset,
            to_datetime=to_datetime,
            agent=agent,
            dry_run=dry_run,
            on_output=show,
        )
    )
    sent = "printed (dry run)" if dry_run else "sent"
    click.echo(
        f"replayed {summary.records} records: {summary.outputs} outputs {sent}, "
        f"{summary.errors} errors, {summary.seconds:.1f}s"
    )


def _text(data: bytes | None) -> str:
    return "null" if data is None else data.decode("utf-8", errors="replace")
