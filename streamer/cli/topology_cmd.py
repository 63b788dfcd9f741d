"""`streamer topology APP`: what the app is made of, as a tree or a diagram."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from streamer.cli import topology as topo
from streamer.cli.client_config import client_options, load_cli_app


@click.command()
@click.argument("app_path", metavar="APP")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "mermaid", "dot"]),
    default="tree",
    show_default=True,
    help="A text tree, a Mermaid flowchart, or a Graphviz digraph.",
)
@client_options
def topology(app_path: str, fmt: str) -> None:
    """Show APP's agents, topics, lanes, sinks, tables and changelogs, repartition and
    dead-letter topics, timers and windows, from its declarations (no broker needed; the
    client options are accepted, as by every command, so one command line fits all)."""
    described = topo.describe(load_cli_app(app_path))
    if fmt == "mermaid":
        click.echo(topo.mermaid(described))
    elif fmt == "dot":
        click.echo(topo.dot(described))
    elif sys.stdout.isatty():
        Console(highlight=False).print(topo.tree(described))
    else:
        click.echo(topo.text(described))
