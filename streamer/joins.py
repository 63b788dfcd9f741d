"""Declaring what brings another topic's data to an event (``App.global_table``,
``App.table_from``, ``App.join``): the tables and the internal agents behind them. The App
methods document the API; this module builds it (see docs/joins.md).

The internal agents of a table built from a topic and of a windowed join never hand an event
to their function: their records are applied when dispatched (``streamer.worker.inline``),
which is what ``Agent.table`` tells the worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamer.agents import Stream, make_agent
from streamer.errors import ConfigError
from streamer.policy import ErrorPolicy
from streamer.state.global_table import GlobalTable
from streamer.state.stream_join import Joiner, StreamJoin
from streamer.state.table_join import JoinedTable, TableJoin
from streamer.state.versioned import VersionedTable

if TYPE_CHECKING:
    from streamer.app import App
    from streamer.topics import Topic

# The internal agents below run no user code that a policy could retry or dead-letter (a
# failing joiner stops the worker): no dead-letter topic is created for them.
_INLINE_POLICY = ErrorPolicy(on_exhausted="stop")


def declare_global_table(
    app: App,
    topic: Topic | str,
    name: str | None,
    key_type: object,
    value_type: object,
    default: Callable[[], Any] | None,
) -> GlobalTable:
    if isinstance(topic, str):
        value_type = dict if value_type is None else value_type
        topic = app.topic(topic, key_type=key_type, value_type=value_type)
    name = name or topic.name
    if name in app.global_tables or name in app.tables:
        raise ConfigError(f"table {name!r} is declared twice")
    table = GlobalTable(name, topic=topic.name, key_serde=topic.key_serde,
                        value_serde=topic.value_serde, default=default)  # fmt: skip
    app.global_tables[name] = table
    return table


def declare_table_from(app: App, topic: Topic, name: str | None, history: float) -> VersionedTable:
    name = name or f"{topic.name}-table"
    if name in app.tables:
        raise ConfigError(f"table {name!r} is declared twice")
    if history <= 0:
        raise ConfigError(f"table {name!r}: history must be > 0 seconds, got {history}")
    table = VersionedTable(name, changelog=f"{app.id}-{name}-changelog", source_topic=topic.name,
                           key_serde=topic.key_serde, value_serde=topic.value_serde,
                           history=history)  # fmt: skip

    async def load(stream: Stream) -> None:
        async for _ in stream:  # never handed anything: applied on dispatch
            pass

    loader = make_agent(load, [topic], sinks=[], concurrency=1, name=f"{name}-loader",
                        internal=True, on_error=_INLINE_POLICY)  # fmt: skip
    app.agents.append(replace(loader, table=table))
    app.tables[name] = table
    return table


def declare_join(
    app: App,
    left: Topic,
    right: Topic,
    within: float,
    sink: Topic,
    joiner: Joiner | None,
    grace: float,
    name: str | None,
) -> StreamJoin:
    name = name or f"{left.name}-{right.name}-join"
    if name in app.joins:
        raise ConfigError(f"join {name!r} is declared twice")
    if within < 0 or grace < 0:
        raise ConfigError(f"join {name!r}: within and grace must be >= 0 seconds")
    if left.name == right.name:
        raise ConfigError(f"join {name!r}: joins two different topics (a self-join is not built)")
    buffers = (
        app.table(f"{name}-left", key_type=bytes, value_type=bytes),
        app.table(f"{name}-right", key_type=bytes, value_type=bytes),
    )
    join = StreamJoin(name, left=left, right=right, sink=sink, within=within, grace=grace,
                      joiner=joiner or _pair, buffers=buffers)  # fmt: skip

    async def pair(stream: Stream) -> AsyncIterator[Any]:
        async for _ in stream:  # never handed anything: joined on dispatch
            pass
        if False:  # an async generator: its pairs go to the sink (for topology, ACLs)
            yield

    agent = make_agent(pair, [left, right], sinks=[sink], concurrency=1, name=f"{name}-joiner",
                       internal=True, on_error=_INLINE_POLICY)  # fmt: skip
    app.agents.append(replace(agent, table=join))
    app.joins[name] = join
    return join


def declare_table_join(
    app: App,
    left: Topic,
    right: Topic,
    joiner: Joiner | None,
    sink: Topic | None,
    name: str | None,
    value_type: object,
) -> JoinedTable:
    name = name or f"{left.name}-{right.name}-joined"
    if name in app.joins or name in app.tables:
        raise ConfigError(f"join {name!r} is declared twice")
    if left.name == right.name:
        raise ConfigError(f"join {name!r}: joins two different topics (a self-join is not built)")
    buffers = (
        app.table(f"{name}-left", key_type=bytes, value_type=bytes),
        app.table(f"{name}-right", key_type=bytes, value_type=bytes),
    )
    value_serde = app._serde(dict if value_type is None else value_type)
    result = JoinedTable(name, changelog=f"{app.id}-{name}-changelog", default=None,
                         key_serde=left.key_serde, value_serde=value_serde,
                         partitions=None)  # fmt: skip
    app.tables[name] = result
    join = TableJoin(name, left=left, right=right, sink=sink, joiner=joiner or _pair,
                     buffers=buffers, result=result)  # fmt: skip

    async def maintain(stream: Stream) -> AsyncIterator[Any]:
        async for _ in stream:  # never handed anything: joined on dispatch
            pass
        if False:  # an async generator: its changes go to the sink (for topology, ACLs)
            yield

    agent = make_agent(maintain, [left, right], sinks=[sink] if sink is not None else [],
                       concurrency=1, name=f"{name}-maintainer", internal=True,
                       on_error=_INLINE_POLICY)  # fmt: skip
    app.agents.append(replace(agent, table=join))
    app.joins[name] = join
    return result


def _pair(left: Any, right: Any) -> dict[str, Any]:
    """The default joiner: both values."""
    return {"left": left, "right": right}
