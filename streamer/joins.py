"""Declaring what brings another topic's data to an event: the ``App`` methods
``global_table``, ``table_from``, ``join`` and ``table_join``. A mixin of
:class:`streamer.app.App`, kept apart so the App module stays readable; it sees the App only
through :class:`_AppLike` (so this module never imports the App). See docs/joins.md.

The internal agents of a table built from a topic and of a windowed join never hand an event
to their function: their records are applied when dispatched (``streamer.worker.inline``),
which is what ``Agent.table`` tells the worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from streamer.agents import Agent, Stream, make_agent
from streamer.errors import ConfigError
from streamer.policy import ErrorPolicy
from streamer.serde import Serde
from streamer.state.global_table import GlobalTable
from streamer.state.stream_join import Joiner, StreamJoin
from streamer.state.table import Table
from streamer.state.table_join import JoinedTable, TableJoin
from streamer.state.versioned import VersionedTable
from streamer.topics import Topic

# The internal agents below run no user code that a policy could retry or dead-letter (a
# failing joiner stops the worker): no dead-letter topic is created for them.
_INLINE_POLICY = ErrorPolicy(on_exhausted="stop")


class _AppLike(Protocol):
    """What of the App these declarations use."""

    id: str
    agents: list[Agent]
    tables: dict[str, Table[Any, Any]]
    global_tables: dict[str, GlobalTable]
    joins: dict[str, StreamJoin | TableJoin]

    def topic(self, name: str, *, key_type: object = ..., value_type: object = ...) -> Topic: ...

    def table(
        self, name: str, *, key_type: object = ..., value_type: object = ...
    ) -> Table[Any, Any]: ...

    def _serde(self, tp: object) -> Serde: ...


class JoinDeclarations:
    """The global-table and join declarations of an App (a mixin of App)."""

    def global_table(
        self: _AppLike,
        topic: Topic | str,
        *,
        name: str | None = None,
        key_type: object = str,
        value_type: object = None,
        default: Callable[[], Any] | None = None,
    ) -> GlobalTable:
        """Declare a global table: every worker holds the whole content of ``topic`` (a
        declared Topic, whose serdes it uses, or a topic name, declared here with
        ``key_type``/``value_type``, JSON values by default), restored at start before any
        partition is processed and kept up to date while running. Read-only; lookups by
        any key (see :mod:`streamer.state.global_table`)."""
        return _declare_global_table(self, topic, name, key_type, value_type, default)

    def table_from(
        self: _AppLike, topic: Topic, *, name: str | None = None, history: float = 86400.0
    ) -> VersionedTable:
        """Declare a table whose content is ``topic`` (its key, its latest value; a
        tombstone deletes), for stream-table joins: partitioned like ``topic``, which must
        then be co-partitioned with the topics the app's agents read (same partition
        count). Inside an agent, ``table[event.key]`` is the value in effect at the event's
        timestamp (see :mod:`streamer.state.versioned`); versions are kept ``history``
        seconds behind each key's newest. The table is read-only: it changes with its topic.
        """
        return _declare_table_from(self, topic, name, history)

    def join(
        self: _AppLike,
        left: Topic,
        right: Topic,
        *,
        within: float,
        sink: Topic,
        joiner: Joiner | None = None,
        grace: float = 0.0,
        name: str | None = None,
    ) -> StreamJoin:
        """Declare a windowed stream-stream (inner) join: records of ``left`` and ``right``
        with the same key and timestamps at most ``within`` seconds apart are paired, and
        ``joiner(left_value, right_value)`` (default: ``{"left": .., "right": ..}``) is sent
        to ``sink`` under that key, each pair once (exactly once under exactly-once).
        Records up to ``grace`` seconds later than the window are still joined. The two
        topics must be co-partitioned and read by the join only (see
        :mod:`streamer.state.stream_join`); read ``sink`` with an agent to go on."""
        return _declare_join(self, left, right, within, sink, joiner, grace, name)

    def table_join(
        self: _AppLike,
        left: Topic,
        right: Topic,
        *,
        joiner: Joiner | None = None,
        sink: Topic | None = None,
        name: str | None = None,
        value_type: object = None,
    ) -> JoinedTable:
        """Declare a table-table (inner) join of two co-partitioned topics read as tables:
        the returned read-only table holds ``joiner(left, right)`` (default: both values)
        for every key both sides have, maintained as either side changes; each change of
        a row (the new row, or a tombstone when a side is deleted) goes to ``sink`` if
        given. Rows are JSON unless ``value_type`` says otherwise. The topics are read by
        the join only (see :mod:`streamer.state.table_join`)."""
        return _declare_table_join(self, left, right, joiner, sink, name, value_type)


def _declare_global_table(
    app: _AppLike,
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


def _declare_table_from(
    app: _AppLike, topic: Topic, name: str | None, history: float
) -> VersionedTable:
    name = name or f"{topic.name}-table"
    if name in app.tables:
        raise ConfigError(f"table {name!r} is declared twice")
    if history <= 0:
        raise ConfigError(f"table {name!r}: history must be > 0 seconds, got {history}")
    table = VersionedTable(name, changelog=f"{app.id}-{name}-changelog", source_topic=topic.name,
                           key_serde=topic.key_serde, value_serde=topic.value_serde,
                           history=history)  # fmt: skip

    _add_inline_agent(app, f"{name}-loader", [topic], [], table)
    app.tables[name] = table
    return table


def _declare_join(
    app: _AppLike,
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
    join = StreamJoin(name, left=left, right=right, sink=sink, within=within, grace=grace,
                      joiner=joiner or _pair, buffers=_buffers(app, name, left, right))  # fmt: skip
    _add_inline_agent(app, f"{name}-joiner", [left, right], [sink], join)
    app.joins[name] = join
    return join


def _declare_table_join(
    app: _AppLike,
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
    buffers = _buffers(app, name, left, right)
    value_serde = app._serde(dict if value_type is None else value_type)
    result = JoinedTable(name, changelog=f"{app.id}-{name}-changelog", default=None,
                         key_serde=left.key_serde, value_serde=value_serde,
                         partitions=None)  # fmt: skip
    app.tables[name] = result
    join = TableJoin(name, left=left, right=right, sink=sink, joiner=joiner or _pair,
                     buffers=buffers, result=result)  # fmt: skip

    sinks = [sink] if sink is not None else []
    _add_inline_agent(app, f"{name}-maintainer", [left, right], sinks, join)
    app.joins[name] = join
    return result


def _buffers(
    app: _AppLike, name: str, left: Topic, right: Topic
) -> tuple[Table[Any, Any], Table[Any, Any]]:
    """The two tables a join keeps each side's records in (raw bytes, changelogged)."""
    if left.name == right.name:
        raise ConfigError(f"join {name!r}: joins two different topics (a self-join is not built)")
    return (
        app.table(f"{name}-left", key_type=bytes, value_type=bytes),
        app.table(f"{name}-right", key_type=bytes, value_type=bytes),
    )


def _add_inline_agent(
    app: _AppLike, name: str, topics: list[Topic], sinks: list[Topic], target: object
) -> None:
    """The internal agent behind a table built from a topic or a join: never handed an
    event (its records are applied when dispatched, ``Agent.table`` = ``target``), so it
    runs no user code. With sinks it is an async generator, so the topology and the ACLs
    see where its results go."""

    async def wait(stream: Stream) -> None:
        async for _ in stream:
            pass

    async def wait_yielding(stream: Stream) -> AsyncIterator[Any]:
        async for _ in stream:
            pass
        if False:  # an async generator, never yielding
            yield

    fn: Any = wait_yielding if sinks else wait
    agent = make_agent(fn, topics, sinks=sinks, concurrency=1, name=name, internal=True,
                       on_error=_INLINE_POLICY)  # fmt: skip
    app.agents.append(replace(agent, table=target))


def _pair(left: Any, right: Any) -> dict[str, Any]:
    """The default joiner: both values."""
    return {"left": left, "right": right}
