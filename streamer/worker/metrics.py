"""Prometheus metrics of one worker, in a registry of its own.

Each :class:`WorkerMetrics` owns a ``CollectorRegistry`` (never the global one), so several
workers in one process (tests, benchmarks) keep separate numbers. The worker creates it in
``Worker.__init__`` (``worker.metrics``) and calls into it at a few points:

- rebalance callbacks (wrapped by :meth:`WorkerMetrics.rebalance_callback`), partitions
  assigned and released (:meth:`assigned`, :meth:`released`);
- the pump, once per iteration (:meth:`refresh`; it does real work at most once per
  :data:`REFRESH_INTERVAL`: consumer lag, paused partitions, table sizes, counter flushes);
- what it hands out to be built in: each new lane's :class:`LaneProbe`
  (:meth:`lane_probe`), and each checkpoint's :class:`CommitTimer` (``commit_timer``) and
  per-topic output tally (:attr:`produced_tally`), passed to their constructors;
- recovery threads (:meth:`recovery_progress`), and the error path (:meth:`dead_lettered`).

Readiness (``/ready``) is :mod:`streamer.worker.readiness`'s; the probes themselves live in
:mod:`streamer.worker.probes`, so lanes and checkpoints need not import this module.

The hot path pays almost nothing: no label lookups per event, no locks. A lane is built with
a :class:`LaneProbe` pre-bound to its agent's children; per
hand-out the lane adds to ``probe.taken`` and compares it with ``probe.due``; per completion
it tests ``probe.started``. Counts reach the Prometheus counters in batches (each refresh and
each scrape), and processing latency is *sampled*: one hand-out in :data:`SAMPLE_EVERY` per
lane (and the first one) is timed. With ``Settings.metrics`` off, lanes get an inert probe
that never samples and the pump's refresh returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streamer.worker.probes import IDLE_PROBE, IDLE_TIMER, SAMPLE_EVERY, CommitTimer, LaneProbe

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

    from streamer.app import App
    from streamer.kafka.backend import Consumer
    from streamer.state.keyed import TablePartition
    from streamer.worker.partition import PartitionState

log = logging.getLogger("streamer.metrics")  # its name at the top level: log filters keep

REFRESH_INTERVAL = 1.0  # seconds between refreshes of lag, sizes and counters from the pump

# Agents range from microseconds (pure transforms) to seconds (remote calls).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
COMMIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

RebalanceCallback = Callable[[Any, list[Any]], None]
Progress = Callable[[int, int], None]


class WorkerMetrics:
    """The metrics of one worker. ``states`` is the worker's own mapping of owned partitions
    (read, never changed here); every method runs on the worker's loop thread except the
    callables from :meth:`recovery_progress`, which recovery threads call (Prometheus
    children are thread-safe). With ``enabled`` False only the per-event instrumentation and
    the exposition are off; readiness and the rare counters still work."""

    def __init__(
        self,
        app: App,
        states: Mapping[tuple[str, int], PartitionState],
        *,
        enabled: bool = True,
        group: str = "",
        guarantee: str = "",
    ) -> None:
        # group, guarantee: the worker's (its settings may differ from the app's), as labels.
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self._states = states
        r = self.registry
        self.events_in = Counter(
            "streamer_events_in", "Events handed to an agent.", ["topic", "agent"], registry=r
        )
        self.events_out = Counter(
            "streamer_events_out",
            "Records agents produced (released to the producer, in offset order).",
            ["topic"],
            registry=r,
        )
        self.processing = Histogram(
            "streamer_processing_seconds",
            f"Time from handing an event (or a take() batch) to an agent until it completes; "
            f"sampled: one hand-out in {SAMPLE_EVERY} per lane.",
            ["agent"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "streamer_consumer_lag",
            "Records between the worker's fetch position and the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "streamer_commit_seconds",
            "Duration of a checkpoint: flush and offset commit (at-least-once), or the "
            "transaction commit (exactly-once).",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            "streamer_commit_failures", "Checkpoints that failed, by cause.", ["reason"], registry=r
        )
        self.table_keys = Gauge(
            "streamer_table_keys",
            "Keys in a table partition's RocksDB store (RocksDB's estimate).",
            ["table", "partition"],
            registry=r,
        )
        self.table_pending = Gauge(
            "streamer_table_pending_keys",
            "Keys of a table partition changed in memory and not yet written to RocksDB.",
            ["table", "partition"],
            registry=r,
        )
        self.recovery_restored = Gauge(
            "streamer_recovery_restored_records",
            "Changelog records applied by the running (or last) recovery of a table partition.",
            ["table", "partition"],
            registry=r,
        )
        self.recovery_remaining = Gauge(
            "streamer_recovery_remaining_records",
            "Changelog records a table partition's recovery has still to apply.",
            ["table", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamer_dead_lettered",
            "Events sent to a dead-letter topic, by agent and reason.",
            ["agent", "reason"],
            registry=r,
        )
        self.rate_limited_seconds = Counter(
            "streamer_rate_limited_seconds",
            "Seconds lanes of an agent waited for its rate limits (agent-wide or per key) "
            "before handing an event out.",
            ["agent"],
            registry=r,
        )
        self.late_events = Counter(
            "streamer_late_events",
            "Events a windowed table dropped as late (every window containing their time "
            "was past its grace), per table partition.",
            ["table", "partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "streamer_rebalances",
            "Rebalance callbacks with partitions, by kind (assign, revoke, lost).",
            ["kind"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamer_assigned_partitions", "Partitions this worker owns.", registry=r
        )
        self.paused_partitions = Gauge(
            "streamer_paused_partitions",
            "Owned partitions paused because their lanes are full (backpressure).",
            registry=r,
        )
        info = Gauge(
            "streamer_worker_info", "The worker's app, group and guarantee.",
            ["app", "group", "guarantee"], registry=r,
        )  # fmt: skip
        info.labels(app.id, group, guarantee).set(1)
        for agent in app.agents:  # present from the start, even before the first sample
            self.processing.labels(agent.name)
        self.commit_timer = CommitTimer(self.commit_seconds, self.commit_failures)
        # Records released per sink topic; the checkpoint's release loop adds to it.
        self.produced: defaultdict[str, int] = defaultdict(int)
        self._produced_reported: dict[str, int] = {}
        # Late events per (table, partition), counted by the tables (process-wide: start
        # from what earlier workers of this process counted).
        self._windowed = [t.windowed for t in app.tables.values() if t.windowed is not None]
        self._late_reported = {
            (w.name, p): n for w in self._windowed for p, n in w.lateness.by_partition.items()
        }
        self._probes: dict[tuple[str, int], list[LaneProbe]] = {}
        self._tables_seen: set[tuple[str, int]] = set()
        self._recovery: dict[tuple[str, int], tuple[int, int]] = {}
        self._next_refresh = 0.0
        self._beat = time.monotonic()  # when the pump last turned (see stalled_for)
        # Counts are flushed by the loop (refresh, release) and by scrapes (the web thread).
        self._flush_lock = threading.Lock()

    # -- wiring ------------------------------------------------------------------------------

    def rebalance_callback(self, kind: str, callback: RebalanceCallback) -> RebalanceCallback:
        """``callback`` (a consumer rebalance callback) that also counts itself as ``kind``."""
        counter = self.rebalances.labels(kind)

        def counted(consumer: Any, partitions: list[Any]) -> None:
            if partitions:
                counter.inc()
            callback(consumer, partitions)

        return counted

    @property
    def produced_tally(self) -> dict[str, int] | None:
        """The per-topic tally of released records a checkpoint is built with (it adds to
        it; a fresh checkpoint after a fenced producer keeps adding to the same one); None
        with metrics off (the checkpoint then counts into a tally of its own)."""
        return self.produced if self.enabled else None

    def lane_probe(self, topic: str, partition: int, agent: str) -> LaneProbe:
        """The probe a new lane of ``agent`` on ``topic[partition]`` is built with, bound to
        the agent's children (the inert probe with metrics off)."""
        if not self.enabled:
            return IDLE_PROBE
        probe = LaneProbe(self.events_in.labels(topic, agent), self.processing.labels(agent))
        self._probes.setdefault((topic, partition), []).append(probe)
        return probe

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions were assigned (or restarted after a rewind); their lanes already
        carry their probes (:meth:`lane_probe`)."""
        self.assigned_partitions.set(len(self._states))

    @property
    def recovery(self) -> Mapping[tuple[str, int], tuple[int, int]]:
        """(table, partition) -> (restored, remaining) of recoveries seen (what
        :meth:`recovery_progress` callables reported), for readiness."""
        return self._recovery

    def released(self, states: Iterable[PartitionState]) -> None:
        """``states`` are no longer owned: count what their lanes handed out and drop their
        per-partition series, so a scrape shows only partitions this worker owns."""
        for state in states:
            probes = self._probes.pop((state.topic, state.partition), ())
            with self._flush_lock:
                for probe in probes:
                    probe.flush()
            self._remove(self.lag, state.topic, state.partition)
            for part in state.tables:
                self._forget_table(part.table.name, part.partition)
        self.assigned_partitions.set(len(self._states))
        with self._flush_lock:
            self._flush_produced()
            self._flush_late()

    def recovery_progress(self, part: TablePartition) -> Progress | None:
        """A ``progress(restored, remaining)`` callable for the recovery of ``part``; it runs
        on the recovery thread."""
        table, partition = part.table.name, part.partition
        self._tables_seen.add((table, partition))
        restored = self.recovery_restored.labels(table, str(partition))
        remaining = self.recovery_remaining.labels(table, str(partition))
        recovery = self._recovery

        def progress(done: int, left: int) -> None:
            restored.set(done)
            remaining.set(left)
            recovery[(table, partition)] = (done, left)

        return progress

    def rate_limited(self, agent: str, seconds: float) -> None:
        """A lane of ``agent`` waits ``seconds`` for a rate limit's token."""
        self.rate_limited_seconds.labels(agent).inc(seconds)

    def dead_lettered(self, agent: str, reason: str) -> None:
        """Count one event of ``agent`` sent to the dead-letter topic (``reason``: the
        exception's type name, or why it was given up on)."""
        self.dead_letters.labels(agent, reason).inc()

    # -- refresh and exposition ---------------------------------------------------------------

    def refresh(self, consumer: Consumer, now: float) -> None:
        """Called by the pump every iteration; at most every :data:`REFRESH_INTERVAL` seconds
        it updates lag, paused partitions and table sizes and flushes the counts. A failure
        here is logged and never stops the worker."""
        self._beat = now
        if now < self._next_refresh or not self.enabled:
            return
        self._next_refresh = now + REFRESH_INTERVAL
        try:
            self._refresh(consumer)
        except Exception:  # metrics must never take the worker down
            log.warning("refreshing metrics failed", exc_info=True)

    def _refresh(self, consumer: Consumer) -> None:
        from confluent_kafka import TopicPartition

        states = list(self._states.values())
        self.flush()
        self.assigned_partitions.set(len(states))
        self.paused_partitions.set(sum(1 for state in states if state.paused))
        if states:
            positions = consumer.position([TopicPartition(s.topic, s.partition) for s in states])
            for tp in positions:
                # cached=True: the high watermark of the last fetch response, no request.
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))
                elif high == 0:  # never written to: no position yet, and nothing to lag
                    self.lag.labels(tp.topic, str(tp.partition)).set(0)
        for state in states:
            if not state.ready.is_set():
                continue  # its stores belong to the recovery thread until then
            for part in state.tables:
                labels = (part.table.name, str(part.partition))
                self._tables_seen.add((part.table.name, part.partition))
                self.table_keys.labels(*labels).set(part.store.approximate_keys())
                self.table_pending.labels(*labels).set(len(part.overlay))
                if part.table.holds_windows:  # present at 0: rate() works from the start
                    self.late_events.labels(*labels)

    def flush(self) -> None:
        """Bring the event counters up to date (cheap: one pass over the owned lanes). Safe
        from any thread: the copies are single C-level steps under the GIL, the rest runs
        under a lock."""
        with self._flush_lock:
            for probes in list(self._probes.values()):
                for probe in probes:
                    probe.flush()
            self._flush_produced()
            self._flush_late()

    def _flush_produced(self) -> None:
        reported = self._produced_reported
        for topic, count in list(self.produced.items()):
            before = reported.get(topic, 0)
            if count != before:
                self.events_out.labels(topic).inc(count - before)
                reported[topic] = count

    def _flush_late(self) -> None:
        reported = self._late_reported
        for windowed in self._windowed:
            for partition, count in list(windowed.lateness.by_partition.items()):
                before = reported.get((windowed.name, partition), 0)
                if count != before:
                    self.late_events.labels(windowed.name, str(partition)).inc(count - before)
                    reported[windowed.name, partition] = count

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, counters flushed first."""
        self.flush()
        return generate_latest(self.registry)

    def stalled_for(self) -> float:
        """Seconds since the pump last turned (it calls :meth:`refresh` every turn)."""
        return time.monotonic() - self._beat

    # -- helpers ------------------------------------------------------------------------------

    def _forget_table(self, table: str, partition: int) -> None:
        if (table, partition) not in self._tables_seen:
            return
        self._tables_seen.discard((table, partition))
        self._recovery.pop((table, partition), None)
        for gauge in (
            self.table_keys,
            self.table_pending,
            self.recovery_restored,
            self.recovery_remaining,
        ):
            self._remove(gauge, table, partition)

    @staticmethod
    def _remove(metric: Gauge, name: str, partition: int) -> None:
        with contextlib.suppress(KeyError):  # never set (no lag known yet, no table)
            metric.remove(name, str(partition))


__all__ = [
    "COMMIT_BUCKETS",
    "IDLE_PROBE",
    "IDLE_TIMER",
    "LATENCY_BUCKETS",
    "REFRESH_INTERVAL",
    "SAMPLE_EVERY",
    "CommitTimer",
    "LaneProbe",
    "WorkerMetrics",
]
