"""Build the producer and checkpoint that implement the app's processing guarantee."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from streamer.kafka.backend import Backend, Consumer
from streamer.kafka.clients import make_producer
from streamer.settings import Settings
from streamer.worker.checkpoint import AtLeastOnceCheckpoint, Checkpoint
from streamer.worker.probes import IDLE_TIMER, CommitTimer
from streamer.worker.transactions import ExactlyOnceCheckpoint, init_transactions

log = logging.getLogger("streamer.worker")

# Bounds how long a crashed worker's open transaction can hold back read_committed readers
# (its changelogs and outputs) before the broker aborts it.
TRANSACTION_TIMEOUT_MS = 10_000


def transactional_id(app_id: str, settings: Settings) -> str:
    """``<app id>-<instance id>``: stable when ``instance_id`` is set, so a restarted worker
    fences its predecessor at once; otherwise unique per process."""
    instance = settings.instance_id
    if instance is None:
        instance = uuid.uuid4().hex[:12]
        log.info(
            "exactly-once without instance_id: transactional.id %s-%s is new for this process; "
            "set instance_id (--instance) so a restarted worker fences its predecessor at once",
            app_id,
            instance,
        )
    return f"{app_id}-{instance}"


def make_checkpoint(
    app_id: str,
    settings: Settings,
    consumer: Consumer,
    backend: Backend,
    *,
    timer: CommitTimer = IDLE_TIMER,
    produced: dict[str, int] | None = None,
) -> Checkpoint:
    """A fresh producer from ``backend`` and the checkpoint for
    ``settings.processing_guarantee``, timed by ``timer``, tallying into ``produced``."""
    overrides: dict[str, Any] = {**settings.kafka_config, **settings.producer_config}
    if not settings.exactly_once:
        producer = make_producer(backend, settings.brokers, overrides)
        return AtLeastOnceCheckpoint(
            consumer, producer, settings.brokers, timer=timer, produced=produced
        )
    txn_id = overrides.setdefault("transactional.id", transactional_id(app_id, settings))
    overrides.setdefault("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
    producer = make_producer(backend, settings.brokers, overrides)
    init_transactions(producer, txn_id, settings.brokers)
    return ExactlyOnceCheckpoint(
        consumer, producer, settings.brokers, timer=timer, produced=produced
    )
