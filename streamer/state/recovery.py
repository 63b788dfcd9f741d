"""Recovery: bring a table partition's local store up to its changelog's end.

Runs in a worker thread (librdkafka and RocksDB release the GIL), so the event loop keeps
serving the other partitions while one restores. Reads ``read_committed``, from the offset
stored with the last checkpoint (or from the start when there is none), to the end; writes
in WriteBatches that carry the offset reached, so an interrupted recovery resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamer.kafka.clients import make_plain_consumer
from streamer.progress import Advance, bar
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore

log = logging.getLogger("streamer.recovery")

BATCH = 10_000
PROGRESS_EVERY = 2.0  # seconds between progress lines


@dataclass
class RecoveryResult:
    """Where the changelog ended, and how many records were applied to reach it."""

    end_offset: int
    restored: int
    seconds: float


def restore(
    store: PartitionStore,
    label: str,
    changelog: str,
    partition: int,
    consumer_config: dict[str, Any],
    cancelled: threading.Event,
    progress: Callable[[int, int], None] | None = None,
) -> RecoveryResult:
    """Replay ``changelog[partition]`` into ``store`` from its stored offset to the end.

    A stored offset outside the changelog's range (the topic was recreated, or truncated)
    or local data without any stored offset cannot be trusted: the store is cleared and
    rebuilt from the start, with a warning. Returns early when ``cancelled`` is set (the
    partition was revoked meanwhile). ``progress(restored, remaining)``, if given, is called
    on this thread at the start and after every batch.
    """
    started = time.monotonic()
    consumer = make_plain_consumer(
        {
            **consumer_config,
            "group.id": f"streamer-restore-{label}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(changelog, partition), timeout=30)
        stored = store.meta_offset(CHANGELOG_OFFSET)
        start = stored if stored is not None else low
        if stored is None and not store.is_empty():
            log.warning("%s: local state has no checkpoint; rebuilding from the changelog", label)
            _clear(store)
        elif stored is not None and not low <= stored <= high:
            log.warning(
                "%s: stored changelog offset %d is outside the changelog's range [%d, %d]; "
                "rebuilding local state from the changelog",
                label,
                stored,
                low,
                high,
            )
            _clear(store)
            start = low
        if progress is not None:
            progress(0, max(high - start, 0))
        if start >= high:
            return RecoveryResult(high, 0, time.monotonic() - started)
        total = high - start
        log.info("%s: restoring %d changelog records from offset %d", label, total, start)
        consumer.assign([TopicPartition(changelog, partition, start)])
        with bar(f"restoring {label}", total) as advance:
            position, restored = _replay(
                consumer, store, label, (start, high), cancelled, progress, advance, started
            )
        seconds = time.monotonic() - started
        log.info(
            "%s: restored %d records in %.1fs (%.0f/s)",
            label,
            restored,
            seconds,
            restored / seconds if seconds else 0.0,
        )
        return RecoveryResult(position, restored, seconds)
    finally:
        consumer.close()


def _replay(
    consumer: Consumer,
    store: PartitionStore,
    label: str,
    span: tuple[int, int],
    cancelled: threading.Event,
    progress: Callable[[int, int], None] | None,
    advance: Advance | None,
    started: float,
) -> tuple[int, int]:
    """The restore loop: apply batches until the end of ``span`` (or cancellation); returns
    the position reached and the records restored. Progress goes to ``advance`` (a bar on a
    terminal) or, without one, to a log line every :data:`PROGRESS_EVERY` seconds."""
    start, high = span
    total = high - start
    position, restored = start, 0
    last_report = time.monotonic()
    while not cancelled.is_set():
        messages = consumer.consume(BATCH, 0.1)
        writes: dict[bytes, bytes | None] = {}
        at_end = False
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    position = message.offset() or position
                    at_end = True
                    continue
                raise RuntimeError(f"{label}: reading changelog failed: {error.str()}")
            key = message.key()
            if key is not None:
                writes[key] = message.value()
            position = (message.offset() or 0) + 1
            restored += 1
        if writes or at_end:
            store.apply(writes, {CHANGELOG_OFFSET: position})
        if progress is not None:
            progress(restored, 0 if at_end else max(high - position, 0))
        if advance is not None:
            advance(position - start)
        now = time.monotonic()
        if advance is None and now - last_report >= PROGRESS_EVERY:
            rate = restored / (now - started)
            left = max(high - position, 0)
            log.info(
                "%s: restored %d of %d records (%.0f/s, about %.0fs left)",
                label,
                restored,
                total,
                rate,
                left / rate if rate else 0.0,
            )
            last_report = now
        if at_end or position >= high:
            break
    return position, restored


def _clear(store: PartitionStore) -> None:
    keys = [key for key, _ in store.items()]
    store.apply(dict.fromkeys(keys), {})
