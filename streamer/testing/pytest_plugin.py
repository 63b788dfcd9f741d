"""pytest fixtures for tests against a real Kafka broker (loaded via the ``pytest11`` entry point).

Fixtures:

``kafka_bootstrap`` (session)
    The bootstrap address: ``$STREAMER_TEST_BROKERS`` if set, else a fresh single-node broker
    (:class:`streamer.kafka.local.LocalKafka` on a free port pair, with its own data directory
    under pytest's tmp dir) started once per session and stopped at its end.
``secure_kafka`` (session)
    A second broker, secured (:mod:`streamer.kafka.local_secure`: SASL_SSL with SCRAM-SHA-512,
    a throw-away CA, ACLs enforced), started the first time a test asks for it and stopped at
    the session's end. It is the :class:`~streamer.kafka.local.LocalKafka`: ``bootstrap`` and
    ``client_config("admin" | "streamer")`` are what clients need. Needs ``cryptography``.
``unique_name`` (function)
    ``unique_name(prefix) -> "prefix-<10 hex>"``.  Every topic and group id in a test goes
    through it, so tests never see each other's data, even on a shared broker.
``kafka_admin`` (session)
    A ``confluent_kafka.admin.AdminClient`` on ``kafka_bootstrap``.
``create_topic`` (function)
    ``create_topic(prefix, partitions=1, config=None) -> name``: creates a uniquely named
    topic, returns once its metadata shows every partition with a leader, and deletes it
    (best effort) when the test ends.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamer.errors import KafkaOperationError, KafkaUnavailableError
from streamer.kafka.local import LocalKafka, free_port_pair

logger = logging.getLogger(__name__)

BROKERS_ENV = "STREAMER_TEST_BROKERS"

UniqueName = Callable[[str], str]
CreateTopic = Callable[..., str]


def _check_reachable(bootstrap: str, timeout: float = 15.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {BROKERS_ENV}={bootstrap} within {timeout:.0f}s; "
            f"start one or unset {BROKERS_ENV} to let the tests start their own"
        ) from exc


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's broker (see the module docstring)."""
    configured = os.environ.get(BROKERS_ENV)
    if configured:
        _check_reachable(configured)
        yield configured
        return
    port = free_port_pair()
    broker = LocalKafka(port, home=tmp_path_factory.mktemp("kafka"))
    started = time.monotonic()
    bootstrap = broker.up(progress=logger.info)
    logger.info("session broker ready in %.1fs", time.monotonic() - started)
    try:
        yield bootstrap
    finally:
        broker.down()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's secured broker (see the module docstring)."""
    broker = LocalKafka(
        free_port_pair(), home=tmp_path_factory.mktemp("kafka-secure"), security="sasl_ssl"
    )
    broker.up(progress=logger.info)
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture
def unique_name() -> UniqueName:
    """``unique_name(prefix)`` -> ``f"{prefix}-{uuid4().hex[:10]}"``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Any:
    """An AdminClient on the session's broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


def _wait_for_topic(admin: Any, name: str, partitions: int, timeout: float = 30.0) -> None:
    # CreateTopics returns when the controller accepted it; the broker's metadata cache (what
    # clients see) catches up a moment later, and producing before that fails.
    deadline = time.monotonic() + timeout
    while True:
        try:
            topic = admin.list_topics(topic=name, timeout=5.0).topics.get(name)
        except KafkaException:
            topic = None
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise KafkaOperationError(f"topic {name} did not appear within {timeout:.0f}s")
        time.sleep(0.1)


@pytest.fixture
def create_topic(kafka_admin: Any, unique_name: UniqueName) -> Iterator[CreateTopic]:
    """``create_topic(prefix, partitions=1, config=None) -> name`` (see the module docstring)."""
    created: list[str] = []

    def create(name_prefix: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(name_prefix)
        new = NewTopic(name, num_partitions=partitions, config=dict(config or {}))
        try:
            kafka_admin.create_topics([new], operation_timeout=30)[name].result(timeout=30)
        except KafkaException as exc:
            raise KafkaOperationError(f"could not create topic {name}: {exc}") from exc
        created.append(name)
        _wait_for_topic(kafka_admin, name, partitions)
        return name

    yield create
    if created:
        # Best effort: the names are unique, so a leftover topic harms nobody.
        try:
            for future in kafka_admin.delete_topics(created, operation_timeout=10).values():
                future.result(timeout=10)
        except (KafkaException, TimeoutError) as exc:
            # A broker busy enough to take over 10 s to delete topics (seen under stress)
            # must not fail the test that used them.
            logger.warning("could not delete test topics %s: %r", created, exc)
