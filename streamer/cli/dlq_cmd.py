"""`streamer dlq show` and `streamer dlq replay`: an app's dead letters."""

from __future__ import annotations

import json

import click

from streamer.dlq import DeadLetters
from streamer.worker import load_app


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (records an agent could not process)."""


@dlq.command()
@click.argument("app_path", metavar="APP")
@click.option("--agent", default=None, help="Only this agent's dead letters.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def show(app_path: str, agent: str | None, as_json: bool) -> None:
    """Summarise APP's dead letters: count, reasons, first and last, replayed."""
    app = load_app(app_path)
    summaries = DeadLetters(app, app.backend).summary(agent)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "agent": s.agent,
                        "topic": s.topic,
                        "count": s.count,
                        "replayed": s.replayed,
                        "pending": s.pending,
                        "reasons": dict(s.reasons.most_common()),
                        "first": s.first,
                        "last": s.last,
                    }
                    for s in summaries
                ],
                indent=2,
            )
        )
        return
    for s in summaries:
        click.echo(
            f"{s.agent}: {s.count} dead letter(s) in {s.topic} "
            f"({s.replayed} replayed, {s.pending} pending)"
        )
        if s.count:
            click.echo(f"  first {s.first}, last {s.last}")
            for reason, count in s.reasons.most_common(10):
                click.echo(f"  {count:>6}  {reason}")


@dlq.command()
@click.argument("app_path", metavar="APP")
@click.option("--agent", required=True, help="Whose dead letters to send back.")
@click.option(
    "--delay",
    default=None,
    help="Deliver them this long from now (e.g. 10m), through the app's delay topic.",
)
def replay(app_path: str, agent: str, delay: str | None) -> None:
    """Send an agent's pending dead letters back to their source topics."""
    from streamer.delays import parse_duration

    wait = parse_duration(delay) if delay is not None else None
    app = load_app(app_path)
    sent = DeadLetters(app, app.backend).replay(agent, delay=wait)
    when = f" (delivered in {delay})" if delay is not None else ""
    click.echo(f"replayed {sent} dead letter(s) of agent {agent!r} to their source topics{when}")
