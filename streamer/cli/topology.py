"""What an app is made of, from its declarations alone (no broker): ``streamer topology APP``.

:func:`describe` collects agents (the topics they read, their sinks, lanes, error policy and
dead-letter topic), ``group_by`` re-keyings and their repartition topics, tables (changelog,
windows, the source topic they are co-partitioned with), timers, and the declared topics no
agent reads or yields to (sent to from code, or read by other apps). It is to streamer what
``Topology.describe()`` is to Kafka Streams. Three renderings: a text tree, Mermaid and
Graphviz dot.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from rich.console import Console
from rich.tree import Tree

from streamer.app import App
from streamer.topics import Topic


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int | None
    key: str
    value: str

    def label(self) -> str:
        parts = "?" if self.partitions is None else str(self.partitions)
        return f"{self.name} ({parts} partitions, key {self.key}, value {self.value})"


@dataclass(frozen=True)
class AgentInfo:
    name: str
    reads: tuple[str, ...]
    sinks: tuple[str, ...]
    concurrency: int
    retries: int
    on_exhausted: str
    dead_letters: str
    group_by: str | None  # the group_by name, for its repartitioner


@dataclass(frozen=True)
class TableInfo:
    name: str
    changelog: str
    key: str
    value: str
    source: str | None
    window: str | None


@dataclass(frozen=True)
class TimerInfo:
    name: str
    schedule: str
    on_leader: bool


@dataclass
class Topology:
    """An app's declarations, ready to render."""

    app: str
    group: str
    guarantee: str
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    agents: list[AgentInfo] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    timers: list[TimerInfo] = field(default_factory=list)

    @property
    def other_topics(self) -> list[str]:
        """Declared topics that no agent reads or yields to."""
        used = {t for a in self.agents for t in (*a.reads, *a.sinks)}
        return [name for name in self.topics if name not in used]


def _topic(topic: Topic) -> TopicInfo:
    return TopicInfo(topic.name, topic.partitions, topic.key_serde.name, topic.value_serde.name)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _window(table: object) -> str | None:
    windowed = getattr(table, "windowed", None)
    if windowed is None:
        return None
    spec = windowed.spec
    kind = "tumbling" if spec.step == spec.size else f"hopping every {_seconds(spec.step / 1000)}"
    return (
        f"{kind} {_seconds(spec.size / 1000)} windows, grace {_seconds(spec.grace / 1000)}, "
        f"kept {_seconds(spec.retention / 1000)}"
    )


def describe(app: App) -> Topology:
    """The topology of ``app``'s declarations (nothing runs, nothing connects)."""
    topology = Topology(app.id, app.group_id, app.settings.processing_guarantee.value)
    for topic in app.topics.values():
        topology.topics[topic.name] = _topic(topic)
    for agent in app.agents:
        policy = app.policy_for(agent)
        # Internal agents are group_by repartitioners, or joins' (agent.table: see joins.py).
        regroups = agent.internal and agent.table is None
        group_by = agent.name.removesuffix("-repartitioner") if regroups else None
        topology.agents.append(
            AgentInfo(
                agent.name,
                tuple(t.name for t in agent.topics),
                tuple(t.name for t in agent.sinks),
                agent.concurrency,
                policy.retries,
                policy.on_exhausted,
                app.dead_letter_topic(agent),
                group_by,
            )
        )
        for topic in (*agent.topics, *agent.sinks):
            topology.topics.setdefault(topic.name, _topic(topic))
    sources = sorted({t.name for a in app.agents if not a.internal for t in a.topics})
    for table in app.tables.values():
        topology.tables.append(
            TableInfo(
                table.name,
                table.changelog,
                table.key_serde.name,
                table.value_serde.name,
                sources[0] if len(sources) == 1 else None,
                _window(table),
            )
        )
    for timer in app.timers:
        if timer.interval is not None:
            schedule = f"every {_seconds(timer.interval)}"
        else:
            schedule = f"cron {timer.cron!r} ({timer.timezone})"
        topology.timers.append(TimerInfo(timer.name, schedule, timer.on_leader))
    return topology


# -- renderings ------------------------------------------------------------------------------


def tree(topology: Topology) -> Tree:
    """The topology as a rich Tree (what ``streamer topology APP`` prints)."""
    root = Tree(
        f"[bold]app {topology.app}[/] (group {topology.group}, {topology.guarantee})",
        guide_style="dim",
    )
    t = topology.topics
    agents = root.add("[bold]agents[/]")
    for a in topology.agents:
        title = f"{a.name}" + (f" (group_by {a.group_by!r})" if a.group_by else "")
        lanes = "1 lane" if a.concurrency == 1 else f"{a.concurrency} lanes"
        node = agents.add(f"[cyan]{title}[/], {lanes} per partition")
        for name in a.reads:
            node.add(f"reads {t[name].label()}")
        for name in a.sinks:
            node.add(f"yields to {t[name].label()}")
        if a.on_exhausted == "dead_letter":
            node.add(f"dead letters to {a.dead_letters} (after {a.retries} retries)")
        else:
            node.add(f"after {a.retries} retries: {a.on_exhausted}")
    if topology.tables:
        tables = root.add("[bold]tables[/]")
        for table in topology.tables:
            node = tables.add(f"[green]{table.name}[/] (key {table.key}, value {table.value})")
            node.add(f"changelog {table.changelog}")
            if table.source:
                node.add(f"co-partitioned with {table.source}")
            if table.window:
                node.add(table.window)
    if topology.timers:
        timers = root.add("[bold]timers[/]")
        for timer in topology.timers:
            leader = ", on the leader only" if timer.on_leader else ""
            timers.add(f"[magenta]{timer.name}[/] {timer.schedule}{leader}")
    others = topology.other_topics
    if others:
        node = root.add("[bold]other topics[/] (sent to from code, or read elsewhere)")
        for name in others:
            node.add(t[name].label())
    return root


def text(topology: Topology) -> str:
    """The tree as plain text (no colour), for pipes and tests."""
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, color_system=None, highlight=False).print(tree(topology))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _node_id(kind: str, name: str) -> str:
    return f"{kind}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


def _edges(topology: Topology) -> list[tuple[str, str, str]]:
    """(from, to, label) between node ids; labels: '' (data), 'dead letters', 'changelog'."""
    edges = []
    for a in topology.agents:
        agent = _node_id("agent", a.name)
        edges += [(_node_id("topic", name), agent, "") for name in a.reads]
        edges += [(agent, _node_id("topic", name), "") for name in a.sinks]
        if a.on_exhausted == "dead_letter":
            edges.append((agent, _node_id("dlq", a.dead_letters), "dead letters"))
    for table in topology.tables:
        edges.append(
            (_node_id("table", table.name), _node_id("topic", table.changelog), "changelog")
        )
        if table.source:
            edges.append(
                (_node_id("topic", table.source), _node_id("table", table.name), "co-partitioned")
            )
    return edges


def _nodes(topology: Topology) -> list[tuple[str, str, str]]:
    """(id, label, kind) of every node; kind: topic, agent, dlq, table, timer."""
    nodes: dict[str, tuple[str, str, str]] = {}
    for name in topology.topics:
        nodes[_node_id("topic", name)] = (_node_id("topic", name), name, "topic")
    for a in topology.agents:
        label = f"{a.name} ({a.concurrency} lanes)" if a.concurrency > 1 else a.name
        nodes[_node_id("agent", a.name)] = (_node_id("agent", a.name), label, "agent")
        if a.on_exhausted == "dead_letter":
            nodes[_node_id("dlq", a.dead_letters)] = (
                _node_id("dlq", a.dead_letters), a.dead_letters, "dlq"
            )  # fmt: skip
    for table in topology.tables:
        label = f"{table.name} ({table.window})" if table.window else table.name
        nodes[_node_id("table", table.name)] = (_node_id("table", table.name), label, "table")
        nodes[_node_id("topic", table.changelog)] = (
            _node_id("topic", table.changelog), table.changelog, "topic"
        )  # fmt: skip
    for timer in topology.timers:
        nodes[_node_id("timer", timer.name)] = (
            _node_id("timer", timer.name), f"{timer.name}: {timer.schedule}", "timer"
        )  # fmt: skip
    return list(nodes.values())


_MERMAID_SHAPES = {
    "topic": ('[["', '"]]'),
    "dlq": ('[["', '"]]'),
    "agent": ('("', '")'),
    "table": ('[("', '")]'),
    "timer": ('{{"', '"}}'),
}


def mermaid(topology: Topology) -> str:
    """A Mermaid flowchart: topics as boxes, agents as rounded nodes, tables as cylinders,
    timers as hexagons; dead letters and changelogs as dotted edges."""
    lines = ["flowchart LR"]
    for node, label, kind in _nodes(topology):
        opening, closing = _MERMAID_SHAPES[kind]
        lines.append(f"  {node}{opening}{label.replace(chr(34), '#quot;')}{closing}")
    for source, target, label in _edges(topology):
        arrow = f"-. {label} .->" if label else "-->"
        lines.append(f"  {source} {arrow} {target}")
    return "\n".join(lines)


_DOT_SHAPES = {
    "topic": "box",
    "dlq": "box",
    "agent": "ellipse",
    "table": "cylinder",
    "timer": "hexagon",
}


def dot(topology: Topology) -> str:
    """A Graphviz digraph with the same nodes and edges as :func:`mermaid`."""
    lines = [f'digraph "{topology.app}" {{', "  rankdir=LR;"]
    for node, label, kind in _nodes(topology):
        style = ", style=dashed" if kind == "dlq" else ""
        escaped = label.replace('"', '\\"')
        lines.append(f'  {node} [label="{escaped}", shape={_DOT_SHAPES[kind]}{style}];')
    for source, target, label in _edges(topology):
        attrs = f' [label="{label}", style=dotted]' if label else ""
        lines.append(f"  {source} -> {target}{attrs};")
    lines.append("}")
    return "\n".join(lines)


__all__ = ["Topology", "describe", "dot", "mermaid", "text", "tree"]
