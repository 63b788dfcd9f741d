"""App: what a streamer application declares (topics, agents, tables, timers) and its
settings. Declarations only: a worker runs an App (``Worker(app, settings=..., backend=...)``),
a replay replays one (``streamer.worker.replay.run_replay``), and this module imports nothing
of either."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamer.agents import Agent, AgentFn, Stream, make_agent
from streamer.delays import (
    DELAY_PARTITIONS,
    RELEASE_AGENT,
    RELEASE_CONCURRENCY,
    delay_topic,
    release,
)
from streamer.errors import ConfigError
from streamer.events import Event, Record
from streamer.joins import JoinDeclarations
from streamer.kafka.backend import Backend
from streamer.outside import Outside, active
from streamer.policy import ErrorPolicy
from streamer.replies import ReplyClient
from streamer.serde import Serde, serde_for
from streamer.settings import Settings, load_settings
from streamer.state.global_table import GlobalTable
from streamer.state.stream_join import StreamJoin
from streamer.state.table import Table
from streamer.state.table_join import TableJoin
from streamer.timers import Timer, TimerFn, make_timer
from streamer.topics import Topic


class App(JoinDeclarations):
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
        self._settings: Settings = load_settings(**settings)
        self.on_error = on_error or ErrorPolicy()
        self.topics: dict[str, Topic] = {}
        self.agents: list[Agent] = []
        self.tables: dict[str, Table[Any, Any]] = {}
        self.global_tables: dict[str, GlobalTable] = {}
        self.joins: dict[str, StreamJoin | TableJoin] = {}
        self.timers: list[Timer] = []
        # The clients topic.send()/agent.ask() use outside a worker (built on first use).
        self._outside = Outside(id, self._settings)
        if self.settings.delayed_delivery:
            self._declare_delays()

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
            name,
            key_serde=key_serde,
            value_serde=value_serde,
            partitions=partitions,
            replication=replication,
            config=dict(config or {}),
            outside=self._outside,
            delay_topic=delay_topic(self.id) if self.settings.delayed_delivery else None,
            regrouper=self,
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
    ) -> Table[Any, Any]:
        """Declare a table: dict-like state in RocksDB, backed by the compacted changelog
        topic ``<app id>-<name>-changelog``. Values are JSON unless ``value_type`` says
        otherwise; ``default`` (a callable such as ``int``) answers reads of absent keys.
        Annotate it for your agents to type-check: ``counts: Table[str, int] = app.table(...)``.
        """
        if name in self.tables:
            raise ConfigError(f"table {name!r} is declared twice")
        table: Table[Any, Any] = Table(
            name,
            changelog=f"{self.id}-{name}-changelog",
            default=default,
            key_serde=self._serde(key_type),
            value_serde=self._serde(dict if value_type is None else value_type),
            partitions=partitions,
        )
        self.tables[name] = table
        return table

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
        """Run a worker for this app until SIGINT/SIGTERM (what `streamer worker` does).
        A convenience for scripts: ``streamer.worker.Worker`` is the runtime, imported here
        only when called so that declaring an app never loads it."""
        from streamer.worker import run_worker

        run_worker(self)

    @property
    def settings(self) -> Settings:
        """The app's settings: what its workers and tools run with unless given others
        (``Worker(app, settings=...)``)."""
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        # Replaced as a whole (they are frozen), e.g. by the CLI's --config: sends outside a
        # worker follow, through clients built anew.
        self._settings = settings
        self._outside.reconfigure(settings, self._outside.backend)

    @property
    def backend(self) -> Backend:
        """Where this app's Kafka clients come from unless a worker or tool is given
        another (``Worker(app, backend=...)``): confluent-kafka unless set here, as a
        declaration (``streamer worker`` and the CLI tools use it). Setting it drops the
        clients :attr:`replies` and ``topic.send()`` built through the previous one."""
        return self._outside.backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        if backend is not self._outside.backend:
            self._outside.reconfigure(self._settings, backend)

    @property
    def replies(self) -> ReplyClient:
        """This process's side of request-reply in the current context (built on first
        use; see :mod:`streamer.replies` and :mod:`streamer.outside`)."""
        return active(self._outside).replies

    def _declare_delays(self) -> None:
        """Declare the delay topic and its release agent (``App(delayed_delivery=True)``;
        see :mod:`streamer.delays`)."""
        topic = self.topic(delay_topic(self.id), partitions=DELAY_PARTITIONS)
        agent = make_agent(
            release, [topic], sinks=[], concurrency=RELEASE_CONCURRENCY, name=RELEASE_AGENT,
            internal=True, held=frozenset({topic.name}),
        )  # fmt: skip
        self.agents.append(agent)
