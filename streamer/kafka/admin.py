"""Topic administration: make the cluster match what the app declares, or say why not."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.cimpl import NewTopic

from streamer.errors import (
    ConfigError,
    KafkaOperationError,
    KafkaUnavailableError,
    TopicMismatchError,
)
from streamer.kafka.access import access_denied
from streamer.kafka.backend import Admin
from streamer.kafka.clients import describe, is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """What a topic must look like. ``partitions=None`` accepts whatever the cluster has."""

    name: str
    partitions: int | None = None
    replication: int | None = None
    config: dict[str, str] = field(default_factory=dict)
    internal: bool = False  # streamer's own (dead letters): created quietly with 1 partition


METADATA_DEADLINE = 30.0  # seconds partition_counts keeps asking through transient errors


def partition_counts(
    admin: Admin, timeout: float = 10.0, *, brokers: str = "the configured brokers"
) -> dict[str, int]:
    """Partition count of every topic in the cluster. A transient failure (the connection
    dropped, the request timed out: ``clients.is_transient``) is retried for up to
    ``METADATA_DEADLINE`` seconds; then KafkaUnavailableError names ``brokers`` and the last
    error."""
    deadline = time.monotonic() + METADATA_DEADLINE
    while True:
        try:
            metadata = admin.list_topics(timeout=timeout)
            break
        except KafkaException as exc:
            if not is_transient(exc):
                raise KafkaOperationError(
                    f"could not list the topics at {brokers}: {describe(exc)}"
                ) from exc
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"Kafka at {brokers} stopped answering metadata requests "
                    f"({describe(exc)}; tried for {METADATA_DEADLINE:.0f}s)"
                ) from exc
            log.warning("listing the topics at %s failed (%s); asking again", brokers, exc)
            time.sleep(0.5)  # a refused connection fails at once: do not spin on it
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def ensure_topics(
    admin: Admin,
    specs: list[TopicSpec],
    *,
    auto_create: bool,
    default_replication: int,
    timeout: float = 60.0,
    brokers: str = "the configured brokers",
) -> dict[str, int]:
    """Create the missing topics of ``specs`` and check the partition counts of the others.

    Returns the partition count of every spec'd topic. Raises TopicMismatchError when an
    existing topic has another partition count than declared, ConfigError when a topic
    is missing and ``auto_create`` is off, KafkaOperationError when a creation fails or is
    not confirmed within ``timeout`` seconds (``brokers`` names the cluster in errors).
    """
    existing = partition_counts(admin, brokers=brokers)
    result: dict[str, int] = {}
    to_create: list[NewTopic] = []
    for spec in specs:
        if spec.name in existing:
            actual = existing[spec.name]
            if spec.partitions is not None and actual != spec.partitions:
                raise TopicMismatchError(
                    f"topic {spec.name!r} has {actual} partitions in the cluster but is declared "
                    f"with partitions={spec.partitions}; declare partitions={actual}, or "
                    "recreate the topic (its data would be lost)"
                )
            result[spec.name] = actual
            continue
        if not auto_create:
            raise ConfigError(
                f"topic {spec.name!r} does not exist and topic_auto_create is off; create it "
                "(kafka-topics --create) or set STREAMER_TOPIC_AUTO_CREATE=true"
            )
        partitions = spec.partitions or 1
        if spec.partitions is None and not spec.internal:
            log.warning(
                "creating topic %r with 1 partition: declare partitions=N to choose", spec.name
            )
        to_create.append(
            NewTopic(
                spec.name,
                num_partitions=partitions,
                replication_factor=spec.replication or default_replication,
                config=dict(spec.config),
            )
        )
        result[spec.name] = partitions
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout)
                log.info("created topic %r (%d partitions)", name, result[name])
            except TimeoutError:
                # A busy broker may have created it without answering in time: look.
                if name in partition_counts(admin, brokers=brokers):
                    log.info("created topic %r (%d partitions; confirmed late)", name,
                             result[name])  # fmt: skip
                    continue
                raise KafkaOperationError(
                    f"could not create topic {name!r}: Kafka at {brokers} did not confirm it "
                    f"within {timeout:.0f}s"
                ) from None
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                # Another worker created it at the same moment: that is success.
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                # Without Describe (implied by Read and Write) an existing topic is invisible,
                # so it looked missing: name both possibilities.
                denied = access_denied(
                    exc, operation="Create (or, if it exists, the Read or Write it needs)",
                    topic=name,
                )  # fmt: skip
                if denied is not None:
                    raise denied from None
                raise KafkaOperationError(f"could not create topic {name!r}: {exc}") from exc
    return result


def wait_for_topics(
    admin: Admin, expected: Mapping[str, int | None], timeout: float = 60.0
) -> None:
    """Return once the cluster's metadata shows every topic of ``expected`` with its partition
    count (when not None) and a leader for every partition.

    Topics just created are not visible to clients at once; a consumer that subscribes or a
    restore that reads a changelog before then meets "Unknown partition". Blocking (it polls
    the metadata): call it off the event loop. Raises KafkaOperationError naming the topics
    still missing after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        missing = _not_visible(admin, expected)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise KafkaOperationError(
                f"topics {', '.join(missing)} are not visible with all their partitions after "
                f"{timeout:.0f}s; check the broker's health (`streamer status` or its logs)"
            )
        log.debug("waiting for topic metadata: %s", ", ".join(missing))
        time.sleep(0.2)


def _not_visible(admin: Admin, expected: Mapping[str, int | None]) -> list[str]:
    try:
        # A full listing: asking for a topic by name could auto-create it.
        topics = admin.list_topics(timeout=5.0).topics
    except KafkaException:
        return sorted(expected)
    missing = []
    for name, count in sorted(expected.items()):
        meta = topics.get(name)
        if (
            meta is None
            or meta.error is not None
            or (count is not None and len(meta.partitions) != count)
            or any(p.leader < 0 for p in meta.partitions.values())
        ):
            missing.append(name)
    return missing


def topic_ids(admin: Admin, names: list[str], timeout: float = 10.0) -> dict[str, str]:
    """Kafka's id of each topic in ``names`` (a new one each time a name is created).
    Best effort: a topic the broker cannot describe is left out, so callers treat a
    missing id as unknown rather than failing."""
    if not names:
        return {}
    found: dict[str, str] = {}
    try:
        futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
    except KafkaException as exc:
        log.debug("cannot describe topics %s: %s", names, exc)
        return found
    for name, future in futures.items():
        try:
            found[name] = str(future.result(timeout=timeout).topic_id)
        except (KafkaException, TimeoutError) as exc:
            log.debug("cannot describe topic %s: %s", name, exc)
    return found
