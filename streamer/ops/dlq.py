"""Dead-letter tools: summarise an app's dead letters, and send them back to be processed.

A replay reads each dead-letter topic from where the previous replay stopped (the
committed offset of the group ``<dlq topic>-replayer``) to its end, produces every record
back to its source topic with its original key, value and headers, then commits. A crash
between the produce and the commit replays those records again (at-least-once).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.agents import Agent
from streamer.app import App
from streamer.delays import delay_headers, delay_topic, due_millis
from streamer.errors import ConfigError, KafkaOperationError
from streamer.events import Headers
from streamer.kafka.backend import Backend, Consumer, Producer
from streamer.kafka.clients import connect_admin, make_consumer, make_producer
from streamer.worker.dead_letters import header, original_headers

TIMEOUT = 30.0


@dataclass
class ErrorGroup:
    """The dead letters of one error type: how many, a sample message, where they came from
    (``topic[partition]`` -> count) and when (``streamer.failed.at``, ISO 8601 UTC)."""

    type: str
    count: int = 0
    sample: str = ""
    sources: Counter[str] = field(default_factory=Counter)
    first: str | None = None
    last: str | None = None

    def add(self, message: str, source: str, failed_at: str | None) -> None:
        self.count += 1
        if not self.sample:
            self.sample = message
        self.sources[source] += 1
        if failed_at:
            self.first = min(self.first or failed_at, failed_at)
            self.last = max(self.last or failed_at, failed_at)


@dataclass
class DeadLetterSummary:
    """One agent's dead letters, grouped by error type (most frequent first)."""

    agent: str
    topic: str
    count: int = 0
    replayed: int = 0
    errors: dict[str, ErrorGroup] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.count - self.replayed

    @property
    def first(self) -> str | None:
        times = [g.first for g in self.errors.values() if g.first]
        return min(times) if times else None

    @property
    def last(self) -> str | None:
        times = [g.last for g in self.errors.values() if g.last]
        return max(times) if times else None

    def by_count(self) -> list[ErrorGroup]:
        return sorted(self.errors.values(), key=lambda g: (-g.count, g.type))

    def add(self, headers: Headers | None) -> None:
        kind = header(headers, "streamer.error.type") or "unknown"
        lines = (header(headers, "streamer.error.message") or "").splitlines()
        source = (
            f"{header(headers, 'streamer.source.topic')}"
            f"[{header(headers, 'streamer.source.partition')}]"
        )
        group = self.errors.get(kind)
        if group is None:
            group = self.errors[kind] = ErrorGroup(kind)
        group.add(lines[0][:200] if lines else "", source, header(headers, "streamer.failed.at"))
        self.count += 1


def _agents(app: App, agent: str | None) -> list[Agent]:
    chosen = [a for a in app.agents if agent is None or a.name == agent]
    if not chosen:
        names = ", ".join(a.name for a in app.agents)
        raise ConfigError(f"app {app.id!r} has no agent {agent!r}; its agents: {names}")
    return chosen


class DeadLetters:
    """Reads (and replays) the dead-letter topics of ``app``'s agents, with clients from
    ``backend``."""

    def __init__(self, app: App, backend: Backend) -> None:
        self.app = app
        self._backend = backend
        settings = app.settings
        self._admin = connect_admin(
            backend, settings.brokers, dict(settings.kafka_config), settings.connect_timeout
        )
        self._topics = self._admin.list_topics(timeout=TIMEOUT).topics

    def _partitions(self, topic: str) -> list[int]:
        meta = self._topics.get(topic)
        return sorted(meta.partitions) if meta is not None and meta.error is None else []

    def _consumer(self, group: str) -> Consumer:
        s = self.app.settings
        # End-of-partition events end a read even when the last offsets are transaction
        # markers (exactly-once dead letters), which no message ever reports.
        return make_consumer(
            self._backend,
            s.brokers,
            group,
            {
                **s.kafka_config,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # At the end of a partition the broker answers at once, not after 500 ms.
                "fetch.wait.max.ms": 10,
            },
        )

    def _replayed(self, topics: list[str]) -> dict[str, dict[int, int]]:
        """The committed offsets of each topic's replayer group (``<topic>-replayer``)."""
        out: dict[str, dict[int, int]] = {}
        for topic in topics:
            consumer = self._consumer(f"{topic}-replayer")
            try:
                partitions = [TopicPartition(topic, p) for p in self._partitions(topic)]
                out[topic] = {
                    tp.partition: tp.offset
                    for tp in consumer.committed(partitions, TIMEOUT)
                    if tp.offset >= 0
                }
            finally:
                consumer.close()
        return out

    def summary(self, agent: str | None = None) -> list[DeadLetterSummary]:
        """Every chosen agent's dead letters, read in one pass of one consumer over all
        their dead-letter topics, each partition from its start to its end at the time of
        the call; nothing is held but the counts."""
        chosen = _agents(self.app, agent)
        summaries = {
            self.app.dead_letter_topic(a): DeadLetterSummary(a.name, self.app.dead_letter_topic(a))
            for a in chosen
        }
        consumer = self._consumer(f"{self.app.group_id}-dlq-show")
        try:
            remaining: dict[tuple[str, int], int] = {}  # partition -> end offset
            assign = []
            lows: dict[tuple[str, int], int] = {}
            for topic in summaries:
                for p in self._partitions(topic):
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=TIMEOUT
                    )
                    lows[(topic, p)] = low
                    if high > low:
                        remaining[(topic, p)] = high
                        assign.append(TopicPartition(topic, p, low))
            try:
                replayed = self._replayed([t for t in summaries if self._partitions(t)])
            except KafkaException as exc:
                raise KafkaOperationError(f"reading the replayers' offsets failed: {exc}") from exc
            for topic, offsets in replayed.items():
                summaries[topic].replayed = sum(
                    max(offset, lows[(topic, p)]) - lows[(topic, p)]
                    for p, offset in offsets.items()
                    if (topic, p) in lows
                )
            if assign:
                consumer.assign(assign)
            while remaining:
                # A short wait: consume() returns early only with a full batch.
                for message in consumer.consume(1000, 0.05):
                    where = (str(message.topic()), message.partition() or 0)
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            remaining.pop(where, None)
                        continue
                    summaries[where[0]].add(message.headers())  # type: ignore[arg-type]
                    if (message.offset() or 0) + 1 >= remaining.get(where, 0):
                        remaining.pop(where, None)
        except KafkaException as exc:
            raise KafkaOperationError(f"reading dead letters failed: {exc}") from exc
        finally:
            consumer.close()
        return list(summaries.values())

    def replay(self, agent: str, delay: timedelta | None = None) -> int:
        """Send ``agent``'s not yet replayed dead letters back to their source topics; with
        ``delay``, through the app's delay topic, to arrive that long from now."""
        (chosen,) = _agents(self.app, agent)
        due_ms = None
        if delay is not None:
            if not self.app.settings.delayed_delivery:
                raise ConfigError(
                    f"replay --delay: app {self.app.id!r} has no delay topic; create the app "
                    "with App(..., delayed_delivery=True) and run its workers"
                )
            due_ms = due_millis(None, delay, time.time())
        topic = self.app.dead_letter_topic(chosen)
        group = f"{topic}-replayer"
        consumer = self._consumer(group)
        s = self.app.settings
        overrides = {**s.kafka_config, **s.producer_config}
        producer: Producer = make_producer(self._backend, s.brokers, overrides)
        sent = 0
        try:
            partitions = [TopicPartition(topic, p) for p in self._partitions(topic)]
            committed = consumer.committed(partitions, TIMEOUT)
            done: list[TopicPartition] = []
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
                position = max(tp.offset, low) if tp.offset >= 0 else low
                if position >= high:
                    continue
                consumer.assign([TopicPartition(topic, tp.partition, position)])
                while position < high:
                    for message in consumer.consume(1000, 1.0):
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                position = high  # only transaction markers were left
                            continue
                        headers = message.headers()
                        source = header(headers, "streamer.source.topic")  # type: ignore[arg-type]
                        if source:
                            kept = original_headers(headers)  # type: ignore[arg-type]
                            if due_ms is not None:  # released to the source when due
                                kept = delay_headers(kept, due_ms, source)
                                source = delay_topic(self.app.id)
                            producer.produce(source, message.value(), message.key(), headers=kept)
                            sent += 1
                        position = (message.offset() or 0) + 1
                done.append(TopicPartition(topic, tp.partition, position))
            if producer.flush(TIMEOUT):
                raise KafkaOperationError("replayed records were not acknowledged; try again")
            if done:
                consumer.commit(offsets=done, asynchronous=False)
        finally:
            consumer.close()
        return sent
