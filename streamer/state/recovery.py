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

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.kafka.backend import Backend
from streamer.progress import bar
from streamer.state.store import CHANGELOG_ID, CHANGELOG_OFFSET, PartitionStore

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
    backend: Backend,
    cancelled: threading.Event,
    progress: Callable[[int, int], None] | None = None,
    changelog_id: str | None = None,
) -> RecoveryResult:
    """Replay ``changelog[partition]`` into ``store`` from its stored offset to the end,
    with a consumer from ``backend`` configured by ``consumer_config`` and restore options.

    A stored offset outside the changelog's range (the topic was recreated, or truncated)
    or local data without any stored offset cannot be trusted: the store is cleared and
    rebuilt from the start, with a warning. Returns early when ``cancelled`` is set (the
    partition was revoked meanwhile). ``progress(restored, remaining)``, if given, is called
    on this thread at the start and after every batch. ``changelog_id`` (the topic's id,
    when known) is compared with the id the local state was built from: a changelog that
    was deleted and created again under the same name also means rebuilding.
    """
    started = time.monotonic()
    consumer = backend.consumer(
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
        built_from = store.meta_text(CHANGELOG_ID)
        start = stored if stored is not None else low
        if changelog_id is not None and built_from is not None and built_from != changelog_id:
            log.warning(
                "%s: the changelog topic %s was created again since local state was built "
                "(topic id %s, was %s); rebuilding local state from the changelog",
                label, changelog, changelog_id, built_from,
            )  # fmt: skip
            _clear(store)
            start = low
        elif stored is None and not store.is_empty():
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
        if changelog_id is not None and built_from != changelog_id:
            store.set_meta_text(CHANGELOG_ID, changelog_id)
        if progress is not None:
            progress(0, max(high - start, 0))
        if start >= high:
            return RecoveryResult(high, 0, time.monotonic() - started)
        total = high - start
        log.info("%s: restoring %d changelog records from offset %d", label, total, start)
        consumer.assign([TopicPartition(changelog, partition, start)])
        # A bar on a terminal (streamer.progress); else a log line every PROGRESS_EVERY s.
        with bar(f"restoring {label}", total) as advance:
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
                        if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                            continue  # its group id is a formality (assign, no commits): no ACL
                        raise KafkaException(error)  # the caller decides: retry, or stop
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


def _clear(store: PartitionStore) -> None:
    keys = [key for key, _ in store.items()]
    store.apply(dict.fromkeys(keys), {})
    store.forget_offsets()
