"""App: what a streamer application declares (topics, agents) and its settings. No loop here:
the worker (``streamer.worker``) runs an App."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.agents import Agent, AgentFn, Stream, make_agent
from streamer.errors import ConfigError, KafkaOperationError
from streamer.events import Event, Headers, Record
from streamer.kafka.backend import Backend, ConfluentBackend, Producer
from streamer.kafka.clients import make_producer
from streamer.policy import ErrorPolicy
from streamer.serde import Serde, serde_for
from streamer.settings import Settings, load_settings
from streamer.state.table import Table
from streamer.timers import Timer, TimerFn, make_timer

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from streamer.replies import ReplyClient
    from streamer.state.global_table import GlobalTable
    from streamer.state.stream_join import Joiner, StreamJoin
    from streamer.state.table_join import JoinedTable, TableJoin
    from streamer.state.versioned import VersionedTable
    from streamer.worker.partition import Output
    from streamer.worker.replay import ReplayRange, ReplaySummary
from streamer.topics import Topic


class App:
    """A streamer application.

    ``App(id, brokers=..., **settings)``: ``id`` names the consumer group (unless
    ``group_id`` is set) and prefixes internal topics. Settings not given as arguments come
    from ``STREAMER_*`` environment variables (see :class:`streamer.settings.Settings`).
    """

    def __init__(
        self,
        id: str,
        *,
        brokers: str | None = None,
        on_error: ErrorPolicy | None = None,
        **settings: Any,
    ) -> None:
        if not id or not id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"app id {id!r} must be non-empty letters, digits, '-', '_', '.'")
        if brokers is not None:
            settings["brokers"] = brokers
        self.id = id
        self.settings: Settings = load_settings(**settings)
        self.on_error = on_error or ErrorPolicy()
        self.topics: dict[str, Topic] = {}
        self.agents: list[Agent] = []
        self.tables: dict[str, Table] = {}
        self.global_tables: dict[str, GlobalTable] = {}
        self.joins: dict[str, StreamJoin | TableJoin] = {}
        self.timers: list[Timer] = []
        self._producer: Producer | None = None
        self._producer_lock = threading.Lock()
        self._backend: Backend = ConfluentBackend()
        self._replies: ReplyClient | None = None
        if self.settings.delayed_delivery:
            from streamer.delays import declare

            declare(self)

    def __repr__(self) -> str:
        return f"App({self.id!r}, brokers={self.settings.brokers!r})"

    @property
    def group_id(self) -> str:
        return self.settings.group_id or self.id

    def topic(
        self,
        name: str,
        *,
        key_type: object = bytes,
        value_type: object = bytes,
        partitions: int | None = None,
        replication: int | None = None,
        config: dict[str, str] | None = None,
    ) -> Topic:
        """Declare a topic. Types choose the serdes (bytes, str, int, float, dict/list as
        JSON, a pydantic model, ``streamer.avro("schema")``, or any Serde object).

        Declaring the same name twice returns the first declaration when it agrees, and
        raises ConfigError when it does not.
        """
        key_serde = self._serde(key_type)
        value_serde = self._serde(value_type)
        if partitions is not None and partitions < 1:
            raise ConfigError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        existing = self.topics.get(name)
        if existing is not None:
            if partitions is not None and existing.partitions not in (None, partitions):
                raise ConfigError(
                    f"topic {name!r} declared twice with partitions "
                    f"{existing.partitions} and {partitions}"
                )
            return existing
        topic = Topic(
            self,
            name,
            key_serde=key_serde,
            value_serde=value_serde,
            partitions=partitions,
            replication=replication,
            config=dict(config or {}),
        )
        self.topics[name] = topic
        return topic

    def _serde(self, tp: object) -> Serde:
        return serde_for(tp, schema_dir=Path(self.settings.schema_dir))

    def agent(
        self,
        topic: Topic | Sequence[Topic],
        *,
        sink: Topic | Sequence[Topic] = (),
        concurrency: int = 1,
        name: str | None = None,
        on_error: ErrorPolicy | None = None,
        reply_type: object = None,
        rate_limit: str | None = None,
        rate_limit_per_key: str | None = None,
    ) -> Callable[[AgentFn], Agent]:
        """Declare an agent over ``topic`` (or several). ``concurrency`` ordered key-lanes
        run per partition; events with the same key always share a lane, so their order holds.
        ``on_error`` overrides the app's :class:`ErrorPolicy` for this agent. ``reply_type``
        chooses the serde of what it yields as ``Reply(value)`` (JSON by default).
        ``rate_limit="100/s"`` caps the events it takes per second in this worker, and
        ``rate_limit_per_key="5/s"`` those of each key (see :mod:`streamer.ratelimit`).

        Returns the :class:`Agent` (callable like the function; ``await agent.ask(...)``).
        """
        topics = [topic] if isinstance(topic, Topic) else list(topic)
        sinks = [sink] if isinstance(sink, Topic) else list(sink)

        def register(fn: AgentFn) -> Agent:
            agent = make_agent(
                fn, topics, sinks=sinks, concurrency=concurrency, name=name, on_error=on_error,
                reply_serde=None if reply_type is None else self._serde(reply_type),
                rate_limit=rate_limit, rate_limit_per_key=rate_limit_per_key,
            )  # fmt: skip
            if any(existing.name == agent.name for existing in self.agents):
                raise ConfigError(f"two agents are named {agent.name!r}; pass name=...")
            if self.policy_for(agent).retry_topics:
                agent = self._with_retry_topics(agent)
            self.agents.append(agent)
            return agent

        return register

    def _with_retry_topics(self, agent: Agent) -> Agent:
        """Declare ``agent``'s retry topics (non-blocking retries, see ErrorPolicy) and let
        it read them too, each record held until its due time."""
        source = agent.topics[0]
        for other in agent.topics[1:]:
            if (other.key_serde.name, other.value_serde.name) != (
                source.key_serde.name,
                source.value_serde.name,
            ):
                raise ConfigError(
                    f"agent {agent.name!r}: retry_topics need the topics it reads to share "
                    f"serdes ({source.name!r} and {other.name!r} differ); give each its own agent"
                )
        policy = self.policy_for(agent)
        retry = tuple(
            self.topic(
                policy.retry_topic_for(self.id, agent.name, level),
                key_type=source.key_serde,
                value_type=source.value_serde,
                partitions=source.partitions,
            )
            for level in range(1, len(policy.retry_topics) + 1)
        )
        return replace(agent, topics=agent.topics + retry, held=frozenset(t.name for t in retry))

    def table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: object = str,
        value_type: object = None,
        partitions: int | None = None,
    ) -> Table:
        """Declare a table: dict-like state in RocksDB, backed by the compacted changelog
        topic ``<app id>-<name>-changelog``. Values are JSON unless ``value_type`` says
        otherwise; ``default`` (a callable such as ``int``) answers reads of absent keys.
        """
        if name in self.tables:
            raise ConfigError(f"table {name!r} is declared twice")
        table = Table(
            name,
            changelog=f"{self.id}-{name}-changelog",
            default=default,
            key_serde=self._serde(key_type),
            value_serde=self._serde(dict if value_type is None else value_type),
            partitions=partitions,
        )
        self.tables[name] = table
        return table

    def global_table(
        self,
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
        from streamer.joins import declare_global_table

        return declare_global_table(self, topic, name, key_type, value_type, default)

    def table_from(
        self, topic: Topic, *, name: str | None = None, history: float = 86400.0
    ) -> VersionedTable:
        """Declare a table whose content is ``topic`` (its key, its latest value; a
        tombstone deletes), for stream-table joins: partitioned like ``topic``, which must
        then be co-partitioned with the topics the app's agents read (same partition
        count). Inside an agent, ``table[event.key]`` is the value in effect at the event's
        timestamp (see :mod:`streamer.state.versioned`); versions are kept ``history``
        seconds behind each key's newest. The table is read-only: it changes with its topic.
        """
        from streamer.joins import declare_table_from

        return declare_table_from(self, topic, name, history)

    def join(
        self,
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
        from streamer.joins import declare_join

        return declare_join(self, left, right, within, sink, joiner, grace, name)

    def table_join(
        self,
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
        from streamer.joins import declare_table_join

        return declare_table_join(self, left, right, joiner, sink, name, value_type)

    def replay(
        self, topic: str, *, dry_run: bool = False, **selection: Unpack[ReplayRange]
    ) -> ReplaySummary:
        """Run the agents reading ``topic`` over a range of it, outside the consumer group
        (its committed offsets never move), and return a summary. ``selection`` picks the
        range (see :class:`~streamer.worker.replay.ReplayRange`): ``to_offset`` is inclusive;
        without an end, the replay runs to the log end as of its start. With ``dry_run``
        outputs are not sent: they are returned in ``summary.printed``.
        Blocking; from a running event loop use :meth:`replay_async`."""
        return asyncio.run(self.replay_async(topic, dry_run=dry_run, **selection))

    async def replay_async(
        self,
        topic: str,
        *,
        dry_run: bool = False,
        on_output: Callable[[Output], None] | None = None,
        **selection: Unpack[ReplayRange],
    ) -> ReplaySummary:
        """The coroutine behind :meth:`replay`; ``on_output`` also sees dry-run outputs."""
        from streamer.worker.replay import plan_replay, run_replay

        plan = plan_replay(self, topic, self.backend, **selection)
        printed: list[Output] = []

        def collect(output: Output) -> None:
            printed.append(output)
            if on_output is not None:
                on_output(output)

        summary = await run_replay(self, plan, self.backend, dry_run=collect if dry_run else None)
        summary.printed = printed
        return summary

    def group_by(
        self,
        topic: Topic,
        key: Callable[[Event], Any],
        *,
        name: str,
        key_type: object = str,
    ) -> Topic:
        """Re-key ``topic`` by ``key(event)`` through the repartition topic
        ``<app id>-<name>-repartition`` (same partition count, same value serde), and return
        that topic for agents to read. An internal agent forwards each event with its new
        key, in offset order per source partition; under exactly-once the forwarding is
        transactional like any agent's output.
        """
        if topic.partitions is None:
            raise ConfigError(
                f"group_by {name!r}: declare partitions=N on topic {topic.name!r}; the "
                "repartition topic gets the same count"
            )
        target = self.topic(
            f"{self.id}-{name}-repartition",
            key_type=key_type,
            value_type=topic.value_serde,
            partitions=topic.partitions,
        )

        async def repartition(stream: Stream) -> AsyncIterator[Record]:
            async for event in stream:
                yield Record(key(event), event.value, event.headers or None)

        agent = make_agent(
            repartition, [topic], sinks=[target], concurrency=1, name=f"{name}-repartitioner",
            internal=True,
        )  # fmt: skip
        self.agents.append(agent)
        return target

    def timer(
        self, interval: float, *, on_leader: bool = False, name: str | None = None
    ) -> Callable[[TimerFn], TimerFn]:
        """Run an ``async def`` every ``interval`` seconds while a worker runs (on one
        worker of the group only with ``on_leader=True``)."""

        def register(fn: TimerFn) -> TimerFn:
            self.timers.append(make_timer(fn, name=name, interval=interval, on_leader=on_leader))
            return fn

        return register

    def crontab(
        self,
        cron: str,
        *,
        timezone: str = "UTC",
        on_leader: bool = False,
        name: str | None = None,
    ) -> Callable[[TimerFn], TimerFn]:
        """Run an ``async def`` on a cron schedule (``"*/5 * * * *"``) in ``timezone``."""

        def register(fn: TimerFn) -> TimerFn:
            timer = make_timer(fn, name=name, cron=cron, timezone=timezone, on_leader=on_leader)
            self.timers.append(timer)
            return fn

        return register

    def policy_for(self, agent: Agent) -> ErrorPolicy:
        """The error policy ``agent`` runs under (its own, else the app's)."""
        return agent.on_error or self.on_error

    def dead_letter_topic(self, agent: Agent) -> str:
        return self.policy_for(agent).dead_letter_topic_for(self.id, agent.name)

    def run(self) -> None:
        """Run a worker for this app until SIGINT/SIGTERM (what `streamer worker` does)."""
        from streamer.worker import run_worker

        run_worker(self)

    @property
    def replies(self) -> ReplyClient:
        """This process's side of request-reply (built on first use): see
        :mod:`streamer.replies`."""
        from streamer.replies import ReplyClient

        with self._producer_lock:
            if self._replies is None:
                self._replies = ReplyClient(self)
            return self._replies

    @property
    def backend(self) -> Backend:
        """Where clients used outside a worker's agents come from (:meth:`send_now`,
        :meth:`replay`): confluent-kafka unless a worker was given another backend, or
        one is set here (``streamer.testing.TestDriver`` sets its in-memory one)."""
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        with self._producer_lock:
            if backend is self._backend:
                return
            self._backend = backend
            producer, self._producer = self._producer, None
            replies, self._replies = self._replies, None
        if replies is not None:  # reads through the previous backend
            replies.close()
        if producer is not None:  # built by the previous backend: finish its work, drop it
            producer.flush(5)

    def send_now(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Produce one encoded record outside any agent and wait for its ack (blocking)."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(
                    self._backend,
                    self.settings.brokers,
                    {**self.settings.kafka_config, **self.settings.producer_config},
                )
            producer = self._producer
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        remaining = producer.flush(30)
        if remaining or failures:
            reason = failures[0] if failures else "no ack within 30s"
            raise KafkaOperationError(
                f"could not send to {topic!r} via {self.settings.brokers}: {reason}"
            )
