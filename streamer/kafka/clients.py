"""Construction of confluent-kafka clients with streamer's defaults, and error translation.

Defaults are chosen for correctness first: manual commits of explicit offsets, cooperative
rebalancing, read_committed, an idempotent producer with Java-compatible (murmur2)
partitioning so co-partitioning with JVM producers holds. User options override them.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streamer.errors import KafkaUnavailableError

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

PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
    # Only failures come back through the delivery callback: no per-message Python work.
    "delivery.report.only.error": True,
}


def _log_client_error(err: KafkaError) -> None:
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        log.warning("all Kafka brokers are down or unreachable: %s", err.str())
    elif err.fatal():
        log.error("fatal Kafka client error: %s", err.str())
    else:
        log.warning("Kafka client: %s", err.str())


def is_memory(brokers: str) -> bool:
    """``memory://NAME`` addresses an in-memory broker (``streamer.kafka.memory``)."""
    return brokers.startswith("memory://")


# The in-memory clients implement the subset of the confluent-kafka API streamer calls
# (duck-typed, not subclasses): the casts below let callers keep one client type.


def make_consumer(brokers: str, group_id: str, overrides: dict[str, Any]) -> Consumer:
    """A consumer in ``group_id``; ``overrides`` (user librdkafka options) win."""
    config = {"bootstrap.servers": brokers, "group.id": group_id, **CONSUMER_DEFAULTS}
    config["error_cb"] = _log_client_error
    config["logger"] = _client_log
    config.update(overrides)
    return make_plain_consumer(config)


def make_plain_consumer(config: dict[str, Any]) -> Consumer:
    """A consumer with exactly ``config`` (no defaults added): recovery and standby readers.
    Dispatches to the in-memory broker when ``bootstrap.servers`` is ``memory://NAME``."""
    brokers = str(config.get("bootstrap.servers", ""))
    if is_memory(brokers):
        from streamer.kafka.memory import lookup
        from streamer.kafka.memory_consumer import MemoryConsumer

        return cast(Consumer, MemoryConsumer(lookup(brokers), config))
    return Consumer(config)


def make_producer(brokers: str, overrides: dict[str, Any]) -> Producer:
    """A producer with streamer's defaults; ``overrides`` win."""
    config: dict[str, Any] = {"bootstrap.servers": brokers, **PRODUCER_DEFAULTS}
    config["error_cb"] = _log_client_error
    config["logger"] = _client_log
    config.update(overrides)
    if is_memory(brokers):
        from streamer.kafka.memory import MemoryProducer, lookup

        return cast(Producer, MemoryProducer(lookup(brokers), config))
    return Producer(config)


# librdkafka's own log lines go through Python logging, never raw to stderr.
_client_log = logging.getLogger("streamer.kafka.client")
# The admin client mostly probes reachability at start; its connection failures are
# reported once, by check_reachable, in words (the last one per address is kept for that).
_admin_log = logging.getLogger("streamer.kafka.admin-client")
_admin_log.setLevel(logging.CRITICAL)
_last_admin_error: dict[str, str] = {}
# How long check_reachable waits in all for a broker that accepted the connection but has
# not answered yet, before it says the broker is unreachable.
SLOW_BROKER_WAIT = 30.0


def make_admin(brokers: str, overrides: dict[str, Any]) -> AdminClient:
    if is_memory(brokers):
        from streamer.kafka.memory import MemoryAdmin, lookup

        return cast(AdminClient, MemoryAdmin(lookup(brokers)))

    def remember(err: KafkaError) -> None:
        _last_admin_error[brokers] = err.str()

    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "logger": _admin_log,
        "error_cb": remember,
    }
    config.update(overrides)
    return AdminClient(config)


def check_reachable(admin: AdminClient, brokers: str, timeout: float = 5.0) -> None:
    """Raise KafkaUnavailableError when no broker at ``brokers`` answers a metadata request.

    After ``timeout`` seconds (the ``connect_timeout`` setting) it gives up if the client
    reported a connection error meanwhile (refused, name not resolved ...): nothing is
    listening there. A broker that accepted the connection but is slow to answer (a busy
    machine, a JVM still starting) gets up to :data:`SLOW_BROKER_WAIT` seconds more, with a
    warning. The message names the address, what was tried and librdkafka's last error."""
    if is_memory(brokers):
        from streamer.kafka.memory import lookup

        lookup(brokers)  # raises KafkaUnavailableError naming the missing broker
        return
    _last_admin_error.pop(brokers, None)  # only errors of this probe count
    waited = timeout
    try:
        admin.list_topics(timeout=timeout)
        return
    except KafkaException as exc:
        failure = exc
    admin.poll(0)  # serves the error callbacks queued meanwhile: the connection's own error
    if brokers not in _last_admin_error:
        extra = max(SLOW_BROKER_WAIT - timeout, timeout)
        log.warning(
            "Kafka at %s has not answered within %gs; waiting up to %gs more", brokers, timeout,
            extra,
        )  # fmt: skip
        waited += extra
        try:
            admin.list_topics(timeout=extra)
            return
        except KafkaException as exc:
            failure = exc
        admin.poll(0)
    cause = _last_admin_error.get(brokers) or (
        failure.args[0].str()
        if failure.args and isinstance(failure.args[0], KafkaError)
        else str(failure)
    )
    raise KafkaUnavailableError(
        f"cannot reach Kafka at {brokers}: no broker answered a metadata request within "
        f"{waited:g}s ({cause}); is the broker running? `streamer kafka up` starts a "
        "local one; --timeout (STREAMER_CONNECT_TIMEOUT) waits longer"
    ) from failure
