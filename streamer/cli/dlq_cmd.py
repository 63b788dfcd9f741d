"""`streamer dlq show` and `streamer dlq replay`: an app's dead letters."""

from __future__ import annotations

import json

import click

from streamer.cli.client_config import client_options, load_cli_app
from streamer.cli.render import echo_table
from streamer.delays import parse_duration
from streamer.ops.dlq import DeadLetters, DeadLetterSummary, ErrorGroup


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (records an agent could not process)."""


def _sources(group: ErrorGroup) -> str:
    return ", ".join(f"{source}: {n}" for source, n in sorted(group.sources.items()))


def _as_json(s: DeadLetterSummary) -> dict[str, object]:
    return {
        "agent": s.agent,
        "topic": s.topic,
        "count": s.count,
        "replayed": s.replayed,
        "pending": s.pending,
        "first": s.first,
        "last": s.last,
        "errors": [
            {
                "type": g.type,
                "count": g.count,
                "sample": g.sample,
                "sources": dict(sorted(g.sources.items())),
                "first": g.first,
                "last": g.last,
            }
            for g in s.by_count()
        ],
    }


@dlq.command()
@click.argument("app_path", metavar="APP")
@click.option("--agent", default=None, help="Only this agent's dead letters.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@client_options
def show(app_path: str, agent: str | None, as_json: bool) -> None:
    """Summarise APP's dead letters per agent, grouped by error type: count, a sample
    message, the source partitions they came from, first and last failure."""
    app = load_cli_app(app_path)
    summaries = DeadLetters(app, app.backend).summary(agent)
    if as_json:
        click.echo(json.dumps([_as_json(s) for s in summaries], indent=2))
        return
    for s in summaries:
        click.echo(
            f"{s.agent}: {s.count} dead letter(s) in {s.topic} "
            f"({s.replayed} replayed, {s.pending} pending)"
        )
        if not s.count:
            continue
        click.echo(f"  first {s.first}, last {s.last}")
        echo_table(
            ["count", "error", "sample", "from", "first", "last"],
            [(g.count, g.type, g.sample[:80], _sources(g), g.first, g.last) for g in s.by_count()],
        )


@dlq.command()
@click.argument("app_path", metavar="APP")
@click.option("--agent", required=True, help="Whose dead letters to send back.")
@click.option(
    "--delay",
    default=None,
    help="Deliver them this long from now (e.g. 10m), through the app's delay topic.",
)
@client_options
def replay(app_path: str, agent: str, delay: str | None) -> None:
    """Send an agent's pending dead letters back to their source topics."""
    wait = parse_duration(delay) if delay is not None else None
    app = load_cli_app(app_path)
    sent = DeadLetters(app, app.backend).replay(agent, delay=wait)
    when = f" (delivered in {delay})" if delay is not None else ""
    click.echo(f"replayed {sent} dead letter(s) of agent {agent!r} to their source topics{when}")
