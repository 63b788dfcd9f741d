"""`streamer status APP`: a live view of an app's partitions, their owners, lag and rates.

Everything comes from the broker (no worker needs to serve HTTP): the group's members and
their assignments (``describe_consumer_groups``), committed offsets and end offsets (the
same reads as ``streamer offsets show``). Rates are differences between two refreshes, so
``--once`` and ``--json`` (one snapshot each) have none. The live view redraws in place on a
terminal (rich's Live) and appends one snapshot after another elsewhere. A refresh that
fails (a broker restarting) keeps the last view, says why under it and tries again at the
next interval: only the first snapshot's failure ends the command.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.live import Live
from rich.text import Text

from streamer.app import App
from streamer.cli.client_config import client_options, load_cli_app
from streamer.cli.render import render_table
from streamer.errors import ConfigError, StreamerError
from streamer.ops.offsets import GroupMember, GroupOffsets, PartitionOffsets, source_topics
from streamer.threads import OnThread

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Snapshot:
    """The group and its partitions at one moment (``taken`` is monotonic seconds)."""

    app: str
    group: str
    state: str
    members: list[GroupMember]
    partitions: list[PartitionOffsets]
    taken: float
    at: datetime

    def owner(self, topic: str, partition: int) -> str | None:
        """The label of the member that owns the partition, None if none does."""
        for member in self.members:
            if (topic, partition) in member.assignment:
                return member_label(member)
        return None

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


def member_label(member: GroupMember) -> str:
    """``instance@host`` with static membership, else ``<member id tail>@host``: short, and
    distinct for workers on one host."""
    host = member.host.lstrip("/")
    name = member.instance_id or member.member_id[-8:]
    return f"{name}@{host}" if host else name


def format_assignment(assignment: tuple[TopicPartitionKey, ...]) -> str:
    """``orders[0,1], words[3]``, the way logs name partitions."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in assignment:
        by_topic.setdefault(topic, []).append(partition)
    return ", ".join(
        f"{topic}[{','.join(map(str, sorted(parts)))}]" for topic, parts in sorted(by_topic.items())
    )


def take_snapshot(app: App, group: GroupOffsets, topics: list[str]) -> Snapshot:
    state, members = group.members()
    return Snapshot(
        app=app.id,
        group=group.group,
        state=state,
        members=members,
        partitions=group.show(topics),
        taken=time.monotonic(),
        at=datetime.now(UTC),
    )


Rates = tuple[float | None, float | None, float | None]


def rates(previous: Snapshot | None, current: Snapshot) -> dict[TopicPartitionKey, Rates]:
    """Per partition: records arriving, records committed, and the lag's change, per second,
    between ``previous`` and ``current`` (None where unknown)."""
    if previous is None or current.taken <= previous.taken:
        return {}
    seconds = current.taken - previous.taken
    before = {(p.topic, p.partition): p for p in previous.partitions}
    result: dict[TopicPartitionKey, Rates] = {}
    for now in current.partitions:
        then = before.get((now.topic, now.partition))
        if then is None:
            continue
        arriving = (now.end - then.end) / seconds
        done = (
            (now.committed - then.committed) / seconds
            if now.committed is not None and then.committed is not None
            else None
        )
        lag_change = (
            (now.lag - then.lag) / seconds if now.lag is not None and then.lag is not None else None
        )
        result[(now.topic, now.partition)] = (arriving, done, lag_change)
    return result


def render(snapshot: Snapshot, previous: Snapshot | None = None) -> str:
    """The text view: a header, the members, then one row per partition."""
    lines = [
        f"app {snapshot.app!r}, group {snapshot.group!r}: {snapshot.state}, "
        f"{len(snapshot.members)} member(s), at {snapshot.at:%Y-%m-%d %H:%M:%S} UTC",
        "",
    ]
    if snapshot.members:
        member_rows = [
            (member_label(m), m.client_id, format_assignment(m.assignment) or "(none)")
            for m in snapshot.members
        ]
        lines += [render_table(["member", "client", "partitions"], member_rows), ""]
    per_second = rates(previous, snapshot)
    rows = []
    for p in snapshot.partitions:
        arriving, done, lag_change = per_second.get((p.topic, p.partition), (None, None, None))
        rows.append(
            (
                p.topic,
                p.partition,
                snapshot.owner(p.topic, p.partition),
                p.committed,
                p.end,
                p.lag,
                _rate(arriving),
                _rate(done),
                _rate(lag_change, signed=True),
            )
        )
    headers = ["topic", "partition", "owner", "committed", "end", "lag", "in/s", "done/s", "lag/s"]
    lines.append(render_table(headers, rows))
    uncommitted = sum(1 for p in snapshot.partitions if p.committed is None)
    suffix = f" ({uncommitted} partition(s) without a committed offset)" if uncommitted else ""
    lines.append(f"total lag: {snapshot.total_lag}{suffix}")
    return "\n".join(lines)


def _rate(value: float | None, *, signed: bool = False) -> str | None:
    if value is None:
        return None
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "app": snapshot.app,
        "group": snapshot.group,
        "state": snapshot.state,
        "time": snapshot.at.isoformat(timespec="seconds"),
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "host": m.host,
                "instance_id": m.instance_id,
                "label": member_label(m),
                "partitions": [f"{t}[{p}]" for t, p in m.assignment],
            }
            for m in snapshot.members
        ],
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "owner": snapshot.owner(p.topic, p.partition),
                "committed": p.committed,
                "start": p.low,
                "end": p.end,
                "lag": p.lag,
            }
            for p in snapshot.partitions
        ],
        "total_lag": snapshot.total_lag,
    }


@click.command()
@click.argument("app_path", metavar="APP")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON snapshot and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes of the live view.",
)
@client_options
def status(app_path: str, once: bool, as_json: bool, interval: float) -> None:
    """Live view of APP's partitions: owners, committed and end offsets, lag and rates.

    Refreshes every --interval seconds until Ctrl-C; rates are the change since the last
    refresh.
    """
    app = load_cli_app(app_path)
    topics = source_topics(app)
    if not topics:
        raise ConfigError(f"app {app.id!r} has no agents, so it reads no topics")
    with GroupOffsets(app.group_id, app.settings, app.backend) as group:
        snapshot = take_snapshot(app, group, topics)
        found = {p.topic for p in snapshot.partitions}
        for topic in topics:
            if topic not in found:
                click.echo(f"warning: topic {topic!r} does not exist yet", err=True)
        if as_json:
            click.echo(orjson.dumps(to_json(snapshot), option=orjson.OPT_INDENT_2).decode())
            return
        if once:
            click.echo(render(snapshot))
            return
        _live(app, group, topics, snapshot, interval)


def _live(
    app: App, group: GroupOffsets, topics: list[str], snapshot: Snapshot, interval: float
) -> None:
    """Refresh the view every ``interval`` seconds until Ctrl-C: redrawn in place on a
    terminal (rich's Live), one snapshot after another otherwise."""
    previous: Snapshot | None = None
    footer = f"refreshing every {interval:g}s; Ctrl-C to quit"
    problem = ""  # why the last refresh failed, shown under the last good view
    refresh = _refresh(lambda: take_snapshot(app, group, topics))

    def view() -> str:
        return f"{render(snapshot, previous)}\n{problem or footer}"

    def step() -> None:
        nonlocal previous, snapshot, problem
        time.sleep(interval)
        try:
            previous, snapshot = snapshot, refresh()
            problem = ""
        except StreamerError as exc:  # worded already; the next refresh may well succeed
            problem = (
                f"refresh failed at {datetime.now().strftime('%H:%M:%S')}: {exc}; showing "
                f"the view of {snapshot.at.astimezone().strftime('%H:%M:%S')}, trying again "
                f"every {interval:g}s; Ctrl-C to quit"
            )

    try:
        if not sys.stdout.isatty():
            while True:
                click.echo(f"{view()}\n")
                step()
        with Live(Text(view()), auto_refresh=False, screen=False) as live:
            while True:
                step()
                live.update(Text(view()), refresh=True)
    except KeyboardInterrupt:
        # The normal way out of a live view, and it must be prompt: a refresh may still be
        # waiting on a slow broker with the group's clients (closing them under it could
        # block or crash), and closing a client waits for its requests too. The clients
        # only read, so there is nothing to hand back: leave now.
        _leave()


def _leave() -> None:
    """Exit 0 at once, without waiting for a refresh thread or the clients' close."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _refresh(take: Callable[[], Snapshot]) -> Callable[[], Snapshot]:
    """``take`` on a helper thread, waited for in short steps that Ctrl-C interrupts: a
    librdkafka call waiting on a slow broker does not return to Python for a signal, so
    the view would otherwise ignore Ctrl-C for as long as the broker takes."""

    def refreshed() -> Snapshot:
        snapshot = OnThread(take, "streamer-status")
        while not snapshot.join(0.1):  # back in Python often: Ctrl-C is seen at once
            pass
        return snapshot.result()

    return refreshed
