"""`streamer offsets show|reset`: inspect and move an app's consumer-group offsets.

The logic lives in :mod:`streamer.ops.offsets` and :mod:`streamer.ops.state`; this module
parses options and prints.
Tables are rendered by :mod:`streamer.cli.render` (rich).
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
import orjson

from streamer.app import App
from streamer.cli.client_config import client_options, load_cli_app
from streamer.cli.render import render_table
from streamer.errors import ConfigError
from streamer.ops.offsets import (
    GroupOffsets,
    OffsetChange,
    ResetTarget,
    parse_datetime,
    parse_duration,
    source_topics,
)
from streamer.ops.state import delete_local_state, local_state_dirs
from streamer.progress import bar


@click.group()
def offsets() -> None:
    """Show or reset the committed offsets of an app's consumer group."""


@offsets.command()
@click.argument("app_path", metavar="APP")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for scripts.")
@client_options
def show(app_path: str, as_json: bool) -> None:
    """Committed offset, end offset and lag per partition of APP's source topics."""
    app = load_cli_app(app_path)
    topics = source_topics(app)
    if not topics:
        raise ConfigError(f"app {app.id!r} has no agents, so it reads no topics")
    with GroupOffsets(app.group_id, app.settings, app.backend) as group:
        rows = group.show(topics)
    found = {row.topic for row in rows}
    for topic in topics:
        if topic not in found:
            click.echo(f"warning: topic {topic!r} does not exist yet", err=True)
    if as_json:
        records = [
            {
                "group": app.group_id,
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.committed,
                "start": r.low,
                "end": r.end,
                "lag": r.lag,
            }
            for r in rows
        ]
        click.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"consumer group {app.group_id!r}")
    table = [(r.topic, r.partition, r.committed, r.low, r.end, r.lag) for r in rows]
    click.echo(render_table(["topic", "partition", "committed", "start", "end", "lag"], table))
    total = sum(r.lag or 0 for r in rows)
    uncommitted = sum(1 for r in rows if r.committed is None)
    suffix = f" ({uncommitted} partition(s) without a committed offset)" if uncommitted else ""
    click.echo(f"total lag: {total}{suffix}")


@offsets.command()
@click.argument("app_path", metavar="APP")
@click.option("--topic", required=True, help="The source topic whose offsets move.")
@click.option(
    "--partition", "partitions", type=int, multiple=True, help="Only this partition (repeatable)."
)
@click.option("--to-offset", type=int, default=None, help="Move to this offset.")
@click.option("--to-datetime", default=None, help="First record at/after this ISO 8601 time.")
@click.option("--by-duration", default=None, help="First record at/after now minus 1h, 30m...")
@click.option("--shift-by", type=int, default=None, help="Move the committed offset by N (+/-).")
@click.option("--to-earliest", is_flag=True, help="Move to the first retained record.")
@click.option("--to-latest", is_flag=True, help="Move past the last record (skip everything).")
@click.option("--execute", is_flag=True, help="Apply the reset (default: dry run).")
@click.option(
    "--reset-state",
    is_flag=True,
    help="Also delete the app's changelog topics and local table state.",
)
@client_options
def reset(
    app_path: str,
    topic: str,
    partitions: tuple[int, ...],
    to_offset: int | None,
    to_datetime: str | None,
    by_duration: str | None,
    shift_by: int | None,
    to_earliest: bool,
    to_latest: bool,
    execute: bool,
    reset_state: bool,
) -> None:
    """Move APP's committed offsets on --topic. A dry run unless --execute is given.

    Refused while the group has active members. Without --reset-state, tables keep their
    current values (the replayed events are counted again on top of them).
    """
    target = _target(to_offset, to_datetime, by_duration, shift_by, to_earliest, to_latest)
    app = load_cli_app(app_path)
    if topic not in source_topics(app):
        read = ", ".join(source_topics(app)) or "none"
        raise ConfigError(f"app {app.id!r} does not read topic {topic!r} (its agents read: {read})")
    if reset_state and partitions:
        raise ConfigError(
            "--reset-state rebuilds whole tables, so it resets every partition: drop --partition"
        )
    with GroupOffsets(app.group_id, app.settings, app.backend) as group:
        changes = group.plan(topic, list(partitions) or None, target)
        mode = "" if execute else " (dry run)"
        click.echo(f"reset group {app.group_id!r} on {topic!r} to {target.describe()}{mode}")
        click.echo(_changes_table(changes))
        if execute:
            group.apply(changes)
            click.echo(f"committed {len(changes)} offset(s) for group {app.group_id!r}")
        else:
            # Say now what --execute would refuse, rather than after the user re-runs.
            state, members = group.active_members()
            if members:
                click.echo(
                    f"note: group {app.group_id!r} has {members} active member(s) (state "
                    f"{state}); --execute is refused until they stop",
                    err=True,
                )
        _state(app, group, execute, reset_state)
    if not execute:
        click.echo("dry run: nothing changed; add --execute to apply")


def _target(
    to_offset: int | None,
    to_datetime: str | None,
    by_duration: str | None,
    shift_by: int | None,
    to_earliest: bool,
    to_latest: bool,
) -> ResetTarget:
    """The one reset target the options name (ConfigError unless exactly one is given)."""
    given = {
        "--to-offset": to_offset is not None,
        "--to-datetime": to_datetime is not None,
        "--by-duration": by_duration is not None,
        "--shift-by": shift_by is not None,
        "--to-earliest": to_earliest,
        "--to-latest": to_latest,
    }
    chosen = [name for name, present in given.items() if present]
    if len(chosen) != 1:
        names = ", ".join(given)
        raise ConfigError(f"give exactly one of {names} (got {', '.join(chosen) or 'none'})")
    if to_offset is not None:
        if to_offset < 0:
            raise ConfigError(f"--to-offset must be >= 0, got {to_offset}")
        return ResetTarget("offset", to_offset)
    if to_datetime is not None:
        return ResetTarget("datetime", parse_datetime(to_datetime))
    if by_duration is not None:
        return ResetTarget("datetime", datetime.now(UTC) - parse_duration(by_duration))
    if shift_by is not None:
        return ResetTarget("shift", shift_by)
    return ResetTarget("earliest" if to_earliest else "latest")


def _changes_table(changes: list[OffsetChange]) -> str:
    rows = [
        (
            c.topic,
            c.partition,
            c.old,
            "→",
            c.new,
            None if c.old is None else f"{c.new - c.old:+d}",
        )
        for c in changes
    ]
    return render_table(["topic", "partition", "old", "", "new", "change"], rows)


def _state(app: App, group: GroupOffsets, execute: bool, reset_state: bool) -> None:
    """Delete (or, in a dry run, list) the app's table state, or warn that it stays."""
    changelogs = [table.changelog for table in app.tables.values()]
    where = (app.settings.state_dir, app.id, list(app.tables))
    if not app.tables:
        if reset_state:
            click.echo(f"app {app.id!r} has no tables: no state to delete")
        return
    if not reset_state:
        click.echo(
            f"warning: tables {', '.join(sorted(app.tables))} keep their current values; "
            "add --reset-state to rebuild them from the replayed input",
            err=True,
        )
        return
    if execute:
        with bar("deleting changelog topics", None, unit="topics") as advance:
            topics = group.delete_topics(changelogs)
            if advance is not None:
                advance(len(topics), len(topics))
        with bar("deleting local state", None, unit="files") as advance:
            paths = delete_local_state(*where, advance)
        verb = "deleted"
    else:
        topics = group.existing(changelogs)
        paths = local_state_dirs(*where)
        verb = "would delete"
    for name in topics:
        click.echo(f"{verb} changelog topic {name}")
    for path in paths:
        click.echo(f"{verb} local state {path}")
    if not topics and not paths:
        click.echo(f"no changelog topics or local state of app {app.id!r} found")
        return
    click.echo(
        f"note: workers on other machines keep their own state_dir/{app.id}; "
        "delete it there too before they start",
        err=True,
    )
