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

from confluent_kafka import KafkaException, TopicPartition

from streamer.agents import Agent
from streamer.app import App
from streamer.delays import delay_headers, delay_topic, due_millis
from streamer.errors import ConfigError, KafkaOperationError
from streamer.kafka.backend import Backend, Consumer, Producer
from streamer.kafka.clients import connect_admin, make_consumer, make_producer
from streamer.worker.dead_letters import header, original_headers

TIMEOUT = 30.0


@dataclass
class DeadLetterSummary:
    """One agent's dead letters."""

    agent: str
    topic: str
    count: int = 0
    replayed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first: str | None = None
    last: str | None = None

    @property
    def pending(self) -> int:
        return self.count - self.replayed


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
        self._admin = connect_admin(backend, settings.brokers, dict(settings.kafka_config))
        self._topics = self._admin.list_topics(timeout=TIMEOUT).topics

    def _partitions(self, topic: str) -> list[int]:
        meta = self._topics.get(topic)
        return sorted(meta.partitions) if meta is not None and meta.error is None else []

    def _consumer(self, group: str) -> Consumer:
        s = self.app.settings
        overrides = {**s.kafka_config, "enable.auto.commit": False}
        return make_consumer(self._backend, s.brokers, group, overrides)

    def _read(self, topic: str, group: str) -> tuple[list[object], dict[int, int], int]:
        """Every record of ``topic`` to its current end; the replayer's committed offsets."""
        consumer = self._consumer(group)
        try:
            partitions = [TopicPartition(topic, p) for p in self._partitions(topic)]
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, TIMEOUT)}
            ends = {
                tp.partition: consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
                for tp in partitions
            }
            records: list[object] = []
            for tp in partitions:
                low, high = ends[tp.partition]
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, tp.partition, low)])
                position = low
                while position < high:
                    for message in consumer.consume(1000, 1.0):
                        if message.error() is None:
                            records.append(message)
                            position = (message.offset() or 0) + 1
            replayed = sum(
                max(committed[p], low) - low
                for p, (low, _) in ends.items()
                if committed.get(p, -1) >= 0
            )
            return records, {p: hw for p, (_, hw) in ends.items()}, replayed
        except KafkaException as exc:
            raise KafkaOperationError(f"reading {topic!r} failed: {exc}") from exc
        finally:
            consumer.close()

    def summary(self, agent: str | None = None) -> list[DeadLetterSummary]:
        result = []
        for chosen in _agents(self.app, agent):
            topic = self.app.dead_letter_topic(chosen)
            records, _, replayed = self._read(topic, f"{topic}-replayer")
            summary = DeadLetterSummary(chosen.name, topic, len(records), replayed)
            for message in records:
                headers = message.headers()  # type: ignore[attr-defined]
                kind = header(headers, "streamer.error.type") or "unknown"
                text = (header(headers, "streamer.error.message") or "").splitlines()[:1]
                summary.reasons[f"{kind}: {text[0][:100] if text else ''}"] += 1
                failed_at = header(headers, "streamer.failed.at")
                if failed_at:
                    summary.first = min(summary.first or failed_at, failed_at)
                    summary.last = max(summary.last or failed_at, failed_at)
            result.append(summary)
        return result

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
                        if message.error() is not None:
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
