"""The worker: one process running an App's agents against Kafka.

One asyncio loop owns everything. The pump consumes batches and hands records to lanes;
rebalance callbacks run inside ``consume()`` on the same thread, so partition state is only
ever touched from the loop thread and needs no locks. The committer is the one owner that
decides whether and when work is committed (``streamer.worker.committer``). Rebalance
callbacks, commits, rewinds and pause/resume are in ``streamer.worker.rebalance``; the stop
sequence in ``streamer.worker.stopping``.

(About 560 lines: the pump and the per-record dispatch stay in one module on purpose, the
hot path read in one place; rebalance, commits and the stop sequence already live in their
own modules, and what remains here is the loop that calls them each turn.)
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from streamer._context import current_lane
from streamer.acls import verify_access
from streamer.agents import Agent
from streamer.app import App
from streamer.clock import SYSTEM_CLOCK, Clock, current_clock
from streamer.errors import (
    AgentFailed,
    ConfigError,
    SerializationError,
    StreamerError,
)
from streamer.events import Event
from streamer.kafka.admin import TopicSpec, ensure_topics, topic_ids, wait_for_topics
from streamer.kafka.backend import Backend, Consumer, Message
from streamer.kafka.clients import ConnectionWatch, connect_admin, make_consumer, make_producer
from streamer.ratelimit import TokenBucket
from streamer.settings import Settings, redact
from streamer.topics import Topic
from streamer.worker.collector import tuned_collector
from streamer.worker.committer import Committer
from streamer.worker.consumer_errors import on_message_error
from streamer.worker.copartition import check_declared, with_copartitioning
from streamer.worker.global_tables import GlobalTables, start_global_tables
from streamer.worker.lane_context import LaneContext, settle_undecodable
from streamer.worker.membership import GroupMembership
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.partition import (
    Effects,
    Output,
    PartitionState,
    Pending,
    Route,
    WorkerStats,
    format_partitions,
    redelivered,
    report_stalls,
)
from streamer.worker.readiness import Readiness
from streamer.worker.replay import OutputSink, ReplayCheckpoint, ReplayPlan
from streamer.worker.scheduler import WorkerStager, run_timer
from streamer.worker.signals import STOP_GRACE, StopSignals
from streamer.worker.standby import StandbyManager
from streamer.worker.tables import TableManager
from streamer.worker.web import bind_web

log = logging.getLogger("streamer.worker")

_IDLE_POLL = 0.1  # seconds poll() may block when no event is in flight
_BUSY_NAP = 0.002  # seconds to yield to agents when events are in flight and none arrived
TICK_INTERVAL = 1.0  # seconds between Table.tick calls
STALL_AFTER = 60.0  # seconds an offset may stay in progress before the worker says so


class Worker(GroupMembership):
    """Runs ``app``'s agents until :meth:`stop` (or SIGINT/SIGTERM) and shuts down cleanly:
    in-flight events finish (bounded by ``shutdown_timeout``), offsets are committed, the
    consumer leaves the group.

    ``settings`` and ``backend`` (default: the app's; its backend is confluent-kafka unless
    declared otherwise) are this worker's: every Kafka client of it, its tables, standbys,
    recoveries and checkpoints comes from ``backend`` with ``settings``. The app is only
    read, never changed.
    """

    def __init__(
        self,
        app: App,
        *,
        settings: Settings | None = None,
        backend: Backend | None = None,
        handle_signals: bool = True,
        replay: ReplayPlan | None = None,
        dry_run: OutputSink | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not app.agents:
            raise ConfigError(f"app {app.id!r} declares no agents; there is nothing to run")
        self.app = app
        self.settings: Settings = app.settings if settings is None else settings
        self.group_id = self.settings.group_id or app.id
        self.backend: Backend = app.backend if backend is None else backend
        self._handle_signals = handle_signals
        # Commit interval, table ticks and timers read time here (simulated in streamer.testing).
        self.clock = clock
        self._stopping = False
        self._states: dict[tuple[str, int], PartitionState] = {}
        self._to_resume: set[PartitionState] = set()
        self._subscribers: dict[str, list[Agent]] = {}
        self._sources: dict[str, Topic] = {}
        for agent in app.agents:
            if replay is not None and agent.name not in replay.agents:
                continue
            for topic in agent.topics:
                if replay is not None and topic.name != replay.topic:
                    continue
                self._subscribers.setdefault(topic.name, []).append(agent)
                self._sources[topic.name] = topic
        self._replay = replay
        self._dry_run = dry_run
        self._background_tasks: list[asyncio.Task[None]] = []
        # Outputs of completed events, in release order, handed to the producer once per
        # pump turn (and before every commit) rather than one call chain per event.
        self._released: list[Effects] = []
        self._standby: StandbyManager | None = None
        self._standby_following = False
        self._failure: BaseException | None = None
        self._replay_state_dir: tempfile.TemporaryDirectory[str] | None = None
        self.stats = WorkerStats()
        self._consumer: Consumer | None = None
        self._committer: Committer | None = None
        self._exactly_once = self.settings.exactly_once and replay is None
        self._watch = ConnectionWatch()  # the consumer's error_cb: logs losing/regaining Kafka
        self._rejoins: list[float] = []  # when the consumer was replaced after a fatal error
        self._group_consumer: Consumer | None = None  # whose rebalance callbacks count
        self._rewind_pending = False
        # Since when reading waits for a commit in flight (_holding_back), and whether the
        # wait was said at INFO.
        self._held_back = None
        self._held_back_said = False
        self._rewind_not_before = 0.0
        self._stop_error: StreamerError | None = None  # why the stop was not clean
        self._globals: GlobalTables | None = None
        self.stopped = asyncio.Event()
        self.metrics = WorkerMetrics(
            app,
            self._states,
            enabled=self.settings.metrics,
            group=self.group_id,
            guarantee=self.settings.processing_guarantee.value,
        )
        self.readiness = Readiness(self._states, self.metrics.recovery)
        self._tables = TableManager(
            app, {}, self.backend, state_dir=Path(self.settings.state_dir), metrics=self.metrics
        )
        self._lane_contexts = {
            agent.name: LaneContext(
                app.policy_for(agent),
                app.dead_letter_topic(agent),
                self._on_taken,
                self._fail,
                self.metrics.dead_lettered,
                clock=self.clock,
                bucket=None
                if agent.rate_limit is None
                else TokenBucket(agent.rate_limit, self.clock.monotonic),
                rate_limited=self.metrics.rate_limited,
                retry_topics=()
                if agent.internal
                else tuple(
                    app.policy_for(agent).retry_topic_for(app.id, agent.name, level)
                    for level in range(1, len(app.policy_for(agent).retry_topics) + 1)
                ),
            )
            for agent in app.agents
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        current_clock.set(self.clock)  # for tables and timers; inherited by every task below
        s = self.settings
        # Before any client, so a taken port fails fast.
        web = bind_web(self.metrics, self.readiness, s.web_port, s.web_host)
        client_config = {**s.kafka_config}
        admin = connect_admin(self.backend, s.brokers, client_config, s.connect_timeout)
        # Every declared topic, not only those agents read and yield to: `send` targets too.
        specs = {name: topic.spec for name, topic in self.app.topics.items()}
        ensure = partial(
            ensure_topics,
            admin,
            auto_create=s.topic_auto_create,
            default_replication=s.topic_replication,
            brokers=s.brokers,
        )
        check_declared(self.app)  # co-partitioned counts, before anything is created
        counts = ensure(list(specs.values()))
        self._tables = TableManager(
            self.app,
            {"bootstrap.servers": s.brokers, **client_config},
            self.backend,
            on_fatal=self._fail,
            state_dir=Path(s.state_dir),
            metrics=self.metrics,
        )
        changelogs = self._tables.changelog_specs({name: counts[name] for name in self._sources})
        if changelogs:
            ensure(changelogs)
            # Which incarnation of each changelog local state must match (see recovery).
            self._tables.changelog_ids = topic_ids(admin, [spec.name for spec in changelogs])
            if s.standby_replicas > 0 and self._replay is None:
                self._standby = StandbyManager(
                    self._tables,
                    {"bootstrap.servers": s.brokers, **client_config},
                    self.backend,
                    on_fatal=self._fail,
                )
                self._tables.standby = self._standby
                self._standby.start()
        dead_letters = {
            ctx.dead_letter_topic: TopicSpec(ctx.dead_letter_topic, None, internal=True)
            for ctx in self._lane_contexts.values()
            if ctx.policy.on_exhausted == "dead_letter"
        }
        if dead_letters:
            ensure([spec for name, spec in dead_letters.items() if name not in counts])
        # Subscribe and restore only once every topic is visible with all its partitions: a
        # just-created topic's "Unknown partition" would otherwise fail a restore.
        visible = {
            **counts,
            **{c.name: c.partitions for c in changelogs},
            **dict.fromkeys(dead_letters),
        }
        await asyncio.get_running_loop().run_in_executor(None, wait_for_topics, admin, visible)
        consumer_overrides = {**client_config, **s.consumer_config}
        # Global tables restore before any partition starts (the table manager's gate).
        self._globals = start_global_tables(
            self.app, s.brokers, self.backend, self._tables, self._fail, admin, counts,
            client_config,
        )  # fmt: skip
        if self._replay is not None:
            await self._start_replay(consumer_overrides)
        else:
            # A missing ACL: one line now, not a stuck consumer.
            verify_access(admin, self.app, self.group_id)
            if s.instance_id:
                consumer_overrides.setdefault("group.instance.id", s.instance_id)
            # Several topics own tables: keep partition p of each on one worker.
            consumer_overrides = with_copartitioning(
                self.app, sorted(self._tables.source_topics), consumer_overrides
            )
            self.readiness.watch_group(admin, self.group_id, {t: counts[t] for t in self._sources})
            log.debug("consumer overrides: %s", redact(consumer_overrides))
            self._join_group(consumer_overrides)
        log.info(
            "worker started: app %r, group %r, brokers %s, agents %s, reading %s",
            self.app.id,
            self.group_id,
            s.brokers,
            ", ".join(a.name for a in self.app.agents),
            ", ".join(sorted(self._subscribers)),
        )
        signals: StopSignals | None = None
        if self._handle_signals:
            signals = StopSignals(
                asyncio.get_running_loop(),
                self._on_signal,
                stop_within=self.settings.shutdown_timeout + STOP_GRACE,
            )
            signals.install()
        # Code that runs outside any event (timers) sends through this worker's checkpoint;
        # every task created from here on inherits it, and lanes override it with themselves.
        current_lane.set(WorkerStager(self._stage_outside_events))
        if self._replay is None:
            self._background_tasks = [
                asyncio.ensure_future(run_timer(timer, self._is_leader, self.clock))
                for timer in self.app.timers
            ]
        web.start()
        try:
            with tuned_collector(s.gc_threshold):  # start-up objects are made by now
                await self._pump()
        finally:
            try:
                await self._shutdown()
            finally:
                if self._globals is not None:
                    await self._globals.stop()
                await web.close()
                if signals is not None:
                    signals.remove()
                self.stopped.set()
        if self._failure is not None:
            if isinstance(self._failure, StreamerError) and not isinstance(
                self._failure, SerializationError
            ):
                raise self._failure  # already one line that says what stopped the worker
            raise AgentFailed(
                f"stopped by the error policy: {type(self._failure).__name__}: {self._failure} "
                "(the event stays uncommitted; fix the agent and restart)"
            ) from self._failure
        if self._stop_error is not None:
            raise self._stop_error

    async def _start_replay(self, overrides: dict[str, Any]) -> None:
        """Assign the replay's range directly (no group membership, no commits)."""
        plan = self._replay
        assert plan is not None
        s = self.settings
        group = f"{self.group_id}-replay-{uuid.uuid4().hex[:8]}"
        overrides = {**overrides, "enable.partition.eof": True}
        consumer = make_consumer(self.backend, s.brokers, group, overrides)
        self._consumer = consumer
        producer = make_producer(self.backend, s.brokers, {**s.kafka_config, **s.producer_config})
        self._committer = Committer(
            lambda: ReplayCheckpoint(consumer, producer, s.brokers, dry_run=self._dry_run)
        )
        self._replay_state_dir = tempfile.TemporaryDirectory(prefix="streamer-replay-")
        self._tables.state_dir = Path(self._replay_state_dir.name)
        partitions = [TopicPartition(plan.topic, p, start) for p, (start, _) in plan.ranges.items()]
        consumer.assign(partitions)
        self._on_assign(consumer, partitions)
        for p, (start, stop) in plan.ranges.items():
            state = self._states[(plan.topic, p)]
            state.stop_offset = stop
            if start >= stop:
                state.fetched_to = stop
        log.info(
            "replaying %d records of %s (partitions %s), group offsets untouched",
            plan.total,
            plan.topic,
            ", ".join(f"{p}: {a}..{b - 1}" for p, (a, b) in plan.ranges.items()),
        )

    def _replay_finished(self) -> bool:
        return (
            all(
                state.stop_offset is not None and state.fetched_to >= state.stop_offset
                for state in self._states.values()
            )
            and not self._busy()
        )

    async def _pump(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        batch_size = self.settings.consume_batch
        interval = self.settings.effective_commit_interval
        clock = self.clock
        next_checkpoint = clock.monotonic() + interval
        next_tick = clock.monotonic() + TICK_INTERVAL
        next_stall_check = clock.monotonic() + STALL_AFTER
        while not self._stopping:
            # A commit in the background is finished by a later turn: never block then.
            busy = self._busy() or self._committing()
            # Outputs waiting for the broker to confirm a commit are bounded: past that,
            # nothing new is read until it did (rebalance callbacks wait as long).
            messages = [] if self._holding_back() else consumer.consume(batch_size, 0)
            if not messages and not busy:
                # Idle: block until the first record arrives (consume() with a timeout would
                # wait for a full batch, adding up to the whole timeout to every latency).
                first = consumer.poll(_IDLE_POLL)
                if first is not None:
                    messages = [first, *consumer.consume(batch_size - 1, 0)]
            if self._rewind_pending:
                # A transaction was aborted inside consume() (a rebalance callback). Seek
                # only now, outside the callback: then everything this call returned
                # predates the seek and is dropped, and everything after it is fresh.
                # A stopping worker does not rewind: what is uncommitted stays so. Errors
                # are kept: a fatal one (a fenced consumer) often comes with the lost
                # partitions that made this rewind.
                messages = [m for m in messages if m.error() is not None]
                if not self._stopping:
                    self._rewind()
            if self._watch.fatal is not None:  # (a replay's consumer has no watch)
                if not self._rejoin_after_fatal(self._watch.fatal):
                    break
                consumer = self._consumer
                assert consumer is not None
                continue
            if messages:
                if self._watch.lost_at is not None and any(m.error() is None for m in messages):
                    self._watch.contact()
                self._dispatch(messages)
            if self._to_resume:
                self._resume_drained()
            self._flush_released()
            self._checkpoint_poll()
            now = clock.monotonic()
            self.metrics.refresh(consumer, now)  # does work at most once a second
            if now >= next_tick:
                # Wall-clock duties of tables (windows closing on an idle partition).
                for table in self._tables.tables:
                    table.tick(clock.time())
                next_tick = now + TICK_INTERVAL
            if now >= next_stall_check:
                report_stalls(self._states.values(), STALL_AFTER)
                next_stall_check = now + STALL_AFTER
            # While a commit is in flight the next one waits for it (not a whole interval).
            if now >= next_checkpoint and not self._committing():
                self._commit_in_background()
                next_checkpoint = now + interval
            if self._rewind_pending and not self._stopping:
                self._rewind()
            if self._replay is not None and self._replay_finished():
                self.stop()
                break
            await asyncio.sleep(0 if messages or not busy else _BUSY_NAP)

    def _busy(self) -> bool:
        """Some event in flight can make progress. A partition whose lanes only hold
        delayed records until due (or are idle) is not busy: the pump then blocks in
        poll() instead of napping every few ms for what may be hours."""
        return any(
            state.inflight and not (state.holding and state.waiting_until_due())
            for state in self._states.values()
        )

    def _is_leader(self) -> bool:
        """The group's leader for ``on_leader`` timers: the owner of partition 0 of the
        first source topic (exactly one worker, whenever the group is stable)."""
        first = min(self._sources) if self._sources else None
        return first is not None and (first, 0) in self._states

    # -- the hot path ----------------------------------------------------------------------

    def _dispatch(self, messages: Sequence[Message]) -> None:
        """Decode each record once and hand it to its lane(s). The hot path: consecutive
        records usually share a partition, so its state and decoders are looked up once per
        run of records, and the error wrapping of ``Topic.decode_*`` is paid only on failure.
        """
        states = self._states
        touched: set[PartitionState] = set()
        last_topic: object = None
        last_partition: object = None
        state: PartitionState | None = None
        decode_key = decode_value = None
        # The partition's only lane, when one agent with concurrency 1 reads it (the common
        # case): records are appended to its buffer directly and it is woken once, below.
        single: Route | None = None
        fed: list[Route] = []
        dispatched = 0
        for message in messages:
            if message.error() is not None:
                # A replay's throw-away group needs no ACL, and its consumer is not replaced.
                if self._replay is not None:
                    on_message_error(message, states, None)
                else:
                    on_message_error(message, states, self.group_id, self._watch.note_fatal)
                continue
            partition = message.partition()
            topic = message.topic()
            if partition != last_partition or topic != last_topic:
                last_topic, last_partition = topic, partition
                # A message without an error always has topic, partition and offset.
                state = states.get((topic, partition))  # type: ignore[arg-type]
                if state is not None:
                    source = self._sources[state.topic]
                    decode_key = source.key_serde.deserialize
                    decode_value = source.value_serde.deserialize
                    touched.add(state)
                    routes = state.routes
                    only = routes[0][0] if len(routes) == 1 and len(routes[0]) == 1 else None
                    single = only if only is not None and only.appendable else None
                    if single is not None and single not in fed:
                        fed.append(single)
            if state is None:  # revoked after the fetch
                continue
            raw_key: bytes | None = message.key()
            offset: int = message.offset()  # type: ignore[assignment]
            if offset < state.fetched_to:
                # Dispatched already while this worker owns it (the client re-fetched from
                # an older position): its effects are in the tables, so it must not run
                # again. Also anything below the offset a rewind started from.
                redelivered(state, offset)
                continue
            state.fetched_to = offset + 1
            if state.stop_offset is not None and offset >= state.stop_offset:
                continue  # a replay's range ends before it
            try:
                event = Event(
                    decode_key(raw_key),  # type: ignore[misc]
                    decode_value(message.value()),  # type: ignore[misc]
                    message.headers() or [],  # type: ignore[arg-type]
                    message.timestamp()[1],
                    state.topic,
                    state.partition,
                    offset,
                )
            except SerializationError:
                source = self._sources[state.topic]
                try:  # decode again through the topic, for a message that names it
                    source.decode_key(raw_key)
                    source.decode_value(message.value())
                except SerializationError as exc:
                    self._undecodable(state, message, exc)
                continue
            if single is not None:
                pending = Pending(event, 1, offset, message)
                state.inflight.append(pending)  # tracked in offset order
                single.buffer.append(pending)
                state.buffered += 1
                dispatched += 1
                continue
            routes = state.routes
            pending = Pending(event, len(routes), offset, message)
            state.inflight.append(pending)  # tracked in offset order
            for lanes in routes:
                if len(lanes) == 1:
                    lanes[0].push(pending)
                elif raw_key is None:
                    lanes[offset % len(lanes)].push(pending)
                else:
                    lanes[zlib.crc32(raw_key) % len(lanes)].push(pending)
            state.buffered += len(routes)
            dispatched += 1
        for lane in fed:
            lane.wake()
        self.stats.records += dispatched
        limit = self.settings.lane_buffer
        to_pause = [s for s in touched if not s.paused and s.buffered >= max(limit, s.pause_at)]
        if to_pause and self._consumer is not None:
            self._consumer.pause([TopicPartition(s.topic, s.partition) for s in to_pause])
            for state in to_pause:
                state.paused = True
            log.debug("paused %s: lanes full", format_partitions(to_pause))

    def _undecodable(self, state: PartitionState, message: Message, error: Exception) -> None:
        readers = [(a.name, self._lane_contexts[a.name]) for a in self._subscribers[state.topic]]
        settle_undecodable(state, message, error, readers, self._fail)

    def _fail(self, error: BaseException) -> None:
        """An error policy says stop: stop the worker; run() raises AgentFailed."""
        if self._failure is None:
            self._failure = error
        self.stop()

    def _stage_outside_events(self, output: Output) -> None:
        """A send outside any event (a timer): released with the next pump turn's outputs,
        into the open checkpoint (the transaction under exactly-once)."""
        effects = Effects(None, None)
        effects.add_output(output)
        self._released.append(effects)


def run_worker(app: App) -> None:
    """Run a worker for ``app`` in a fresh event loop until it is stopped."""
    asyncio.run(Worker(app).run())


__all__ = ["Worker", "run_worker"]
