"""The configuration streamer gives its Kafka clients, and helpers that build them through a
:class:`~streamer.kafka.backend.Backend`.

Defaults are chosen for correctness first: manual commits of explicit offsets, cooperative
rebalancing, read_committed, an idempotent producer with Java-compatible (murmur2)
partitioning so co-partitioning with JVM producers holds. User options override them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamer.kafka.backend import Admin, Backend, Config, Consumer, Producer

log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "isolation.level": "read_committed",
    # Bounded prefetch keeps memory flat under a large backlog (DESIGN §2 rule 8).
    "queued.max.messages.kbytes": 16384,
    # ... and resume fetching soon after the queue drains below it (librdkafka's default
    # waits a whole second, which caps throughput near 120,000 records/s).
    "fetch.queue.backoff.ms": 10,
    "session.timeout.ms": 10000,
    "heartbeat.interval.ms": 1000,
}
# Options of the classic group protocol that the KIP-848 one (group.protocol=consumer) sets
# on the broker instead.
CLASSIC_ONLY = ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
    # Only failures come back through the delivery callback: no per-message Python work.
    "delivery.report.only.error": True,
}


# Seconds during which the same client error is logged once: while a broker is away every
# client reports each failed reconnection, hundreds of lines a minute that say one thing.
REPEAT_WINDOW = 30.0


class _RepeatGate:
    """Says whether a client error's text should be logged now: the first of its kind in
    :data:`REPEAT_WINDOW` seconds is, with how many like it were held back before it (texts
    alike but for their numbers, such as "after 3ms", are of one kind). Thread-safe: error
    callbacks run on whichever thread polls the client."""

    def __init__(self, window: float = REPEAT_WINDOW) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (last logged at, held back)

    def admit(self, text: str) -> int | None:
        """None to hold ``text`` back; else how many like it were held back since the last
        one logged."""
        kind = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        with self._lock:
            logged_at, held = self._seen.get(kind, (-self._window, 0))
            if now - logged_at < self._window:
                self._seen[kind] = (logged_at, held + 1)
                return None
            if len(self._seen) > 1000:  # texts with names in them: keep the map small
                self._seen.clear()
            self._seen[kind] = (now, 0)
            return held

    def shown(self, text: str, kind: str | None = None) -> str | None:
        """``text`` as it should be logged now (with how many like it were held back), or
        None to hold it back; ``kind`` (default: ``text``) is what tells repeats apart."""
        held = self.admit(kind if kind is not None else text)
        if held is None:
            return None
        return f"{text} ({held} more like it since it was last shown)" if held else text


_repeats = _RepeatGate()


def _log_client_error(err: KafkaError) -> None:
    text = err.str()
    if err.fatal():  # never held back: it ends the client
        log.error("fatal Kafka client error: %s", text)
        return
    shown = _repeats.shown(text, kind=f"{err.code()}:{text}")
    if shown is None:
        return
    text = shown
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        log.warning("all Kafka brokers are down or unreachable: %s", text)
    else:
        log.warning("Kafka client: %s", text)


# Errors that pass on their own: metadata that lags a just-created topic, a leader moving,
# a broker restarting or slow to answer. Anything else is reported, not retried.
TRANSIENT_CODES = frozenset(
    getattr(KafkaError, name)
    for name in (
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_PARTITION",
        "_UNKNOWN_TOPIC",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "NOT_LEADER_OR_FOLLOWER",
        "REQUEST_TIMED_OUT",
        "NETWORK_EXCEPTION",
        "_TIMED_OUT",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        # The connection to a broker that went away was torn down under a request (seen
        # from a restore's watermark read while the broker restarted).
        "_DESTROY_BROKER",
        "_WAIT_COORD",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "OFFSET_NOT_AVAILABLE",
    )
    if hasattr(KafkaError, name)
)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a KafkaException carries (None for anything else)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


def is_transient(exc: BaseException) -> bool:
    """True for a Kafka error worth retrying (see :data:`TRANSIENT_CODES`), never a fatal one."""
    err = kafka_error(exc)
    return (
        err is not None and not err.fatal() and (err.retriable() or err.code() in TRANSIENT_CODES)
    )


def describe(exc: BaseException) -> str:
    """One line for ``exc``: a Kafka error's own text, else ``Type: message``."""
    err = kafka_error(exc)
    if err is not None:
        return f"{err.name()}: {err.str()}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class ConnectionWatch:
    """A client's ``error_cb`` that also notices the broker connection coming back.

    librdkafka reports losing every broker (``_ALL_BROKERS_DOWN``) but not regaining one, and
    reconnects by itself. The owner of the client calls :meth:`contact` whenever the client
    got an answer (records fetched): after a loss, that logs the reconnection once.
    """

    def __init__(self) -> None:
        self.lost_at: float | None = None  # monotonic time every broker was lost, if so
        # A fatal error (e.g. a static member fenced): the client can do nothing more, and
        # its owner must stop rather than run on without partitions.
        self.fatal: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        _log_client_error(err)
        if err.fatal() or err.code() == KafkaError._FATAL:
            self.note_fatal(err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self.lost_at is None:
            self.lost_at = time.monotonic()

    def note_fatal(self, err: KafkaError) -> None:
        """The client failed fatally with ``err`` (from ``error_cb`` or a consumed error
        message): its owner must replace it or stop. The first such error is kept."""
        if self.fatal is None:
            self.fatal = err

    def contact(self) -> None:
        """The client heard from a broker: log a reconnection if every broker was lost."""
        lost_at, self.lost_at = self.lost_at, None
        if lost_at is not None:
            lost = time.monotonic() - lost_at
            log.info("reconnected to Kafka after %.1fs without a broker", lost)


def consumer_config(
    brokers: str, group_id: str, overrides: dict[str, Any], *, watch: ConnectionWatch | None = None
) -> Config:
    """The full configuration of a consumer in ``group_id``: streamer's defaults, then
    ``overrides`` (user librdkafka options), which win. ``watch`` (if given) receives the
    client's errors."""
    config: Config = {"bootstrap.servers": brokers, "group.id": group_id, **CONSUMER_DEFAULTS}
    config["error_cb"] = watch if watch is not None else _log_client_error
    config["logger"] = _client_log
    config.update(overrides)
    if config.get("group.protocol") == "consumer":
        # KIP-848: the broker owns these (librdkafka refuses them); see worker/copartition.
        for name in CLASSIC_ONLY:
            if name not in overrides:
                config.pop(name, None)
    return config


def producer_config(brokers: str, overrides: dict[str, Any]) -> Config:
    """The full configuration of a producer: streamer's defaults; ``overrides`` win."""
    config: Config = {"bootstrap.servers": brokers, **PRODUCER_DEFAULTS}
    config["error_cb"] = _log_client_error
    config["logger"] = _client_log
    config.update(overrides)
    return config


def make_consumer(
    backend: Backend,
    brokers: str,
    group_id: str,
    overrides: dict[str, Any],
    *,
    watch: ConnectionWatch | None = None,
) -> Consumer:
    """A consumer in ``group_id`` from ``backend``; ``overrides`` (user options) win."""
    return backend.consumer(consumer_config(brokers, group_id, overrides, watch=watch))


def make_producer(backend: Backend, brokers: str, overrides: dict[str, Any]) -> Producer:
    """A producer with streamer's defaults from ``backend``; ``overrides`` win."""
    return backend.producer(producer_config(brokers, overrides))


class _RepeatFilter(logging.Filter):
    """Holds back a librdkafka log line (WARNING and above) of a kind logged within
    :data:`REPEAT_WINDOW` seconds, as :func:`_log_client_error` does for error callbacks:
    while a broker is away each client logs every failed reconnection, at ERROR, several
    times a second. The next line of the kind shown says how many were held back."""

    def __init__(self) -> None:
        super().__init__()
        self._gate = _RepeatGate()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        shown = self._gate.shown(text)
        if shown is None:
            return False
        record.msg, record.args = shown, ()
        return True


# librdkafka's own log lines go through Python logging, never raw to stderr.
_client_log = logging.getLogger("streamer.kafka.client")
_client_log.addFilter(_RepeatFilter())
# The admin client mostly probes reachability at start; its connection failures are
# reported once, by check_reachable, in words.
_admin_log = logging.getLogger("streamer.kafka.admin-client")
_admin_log.setLevel(logging.CRITICAL)


def make_admin(backend: Backend, brokers: str, overrides: dict[str, Any]) -> Admin:
    """An admin client from ``backend``; ``overrides`` win."""
    return backend.admin({"bootstrap.servers": brokers, "logger": _admin_log, **overrides})


def connect_admin(
    backend: Backend, brokers: str, overrides: dict[str, Any], timeout: float = 5.0
) -> Admin:
    """An admin client, once a broker answered (KafkaUnavailableError, one line, if none);
    ``timeout`` is the ``connect_timeout`` setting (see ``Backend.check_reachable``)."""
    admin = make_admin(backend, brokers, overrides)
    backend.check_reachable(admin, brokers, timeout)
    return admin
