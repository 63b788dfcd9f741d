"""pytest fixtures for tests against a real Kafka broker (loaded via the ``pytest11`` entry point).

Fixtures:

Under pytest-xdist the session's brokers are shared by all its worker processes: the first
worker that needs one starts it, the others find it running, and the controlling process
stops it at the end. One JVM instead of one per worker leaves the cores to the tests (and
every test is isolated by its unique names anyway).

``kafka_bootstrap`` (session)
    The bootstrap address: ``$STREAMER_TEST_BROKERS`` if set, else a fresh single-node broker
    (:class:`streamer.kafka.local.LocalKafka` on a free port pair, with its own data directory
    under pytest's tmp dir) started the first time a test asks for it and stopped when the
    test session ends.
``secure_kafka`` (session)
    A second broker, secured (:mod:`streamer.kafka.local_secure`: SASL_SSL with SCRAM-SHA-512,
    a throw-away CA, ACLs enforced), started the first time a test asks for it and stopped
    when the test session ends. It is the :class:`~streamer.kafka.local.LocalKafka`:
    ``bootstrap`` and ``client_config("admin" | "streamer")`` are what clients need.
    Needs ``cryptography``.
``unique_name`` (function)
    ``unique_name(prefix) -> "prefix-<10 hex>"``.  Every topic and group id in a test goes
    through it, so tests never see each other's data, even on a shared broker.
``kafka_admin`` (function)
    A fresh ``confluent_kafka.admin.AdminClient`` on ``kafka_bootstrap`` for each test.
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
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamer.errors import KafkaOperationError, KafkaUnavailableError
from streamer.kafka.clients import is_transient, kafka_error
from streamer.kafka.jars import file_lock
from streamer.kafka.local import LocalKafka
from streamer.kafka.ports import free_port_pair

logger = logging.getLogger(__name__)

BROKERS_ENV = "STREAMER_TEST_BROKERS"
SHARED_BROKERS = "brokers"  # under the session's root directory: one home per broker

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


def _session_root(factory: pytest.TempPathFactory) -> Path:
    """The directory every process of this test session shares: pytest's base temp, or, in
    a pytest-xdist worker, its parent (xdist gives each worker ``<root>/popen-gwN``)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _shared_broker(root: Path, name: str, security: str = "plaintext") -> LocalKafka:
    """The session's broker ``name``: the first process to ask picks its free port pair and
    records it beside the broker's home, so every process of the session finds the same
    one (LocalKafka's own lock makes only the first start it)."""
    brokers = root / SHARED_BROKERS
    with file_lock(brokers / f"{name}.lock"):
        recorded = brokers / f"{name}.port"
        if recorded.exists():
            port = int(recorded.read_text())
        else:
            port = free_port_pair()
            recorded.write_text(str(port))
    return LocalKafka(port, home=brokers / name, security=security, light=True)


def _stop_shared_brokers(root: Path) -> None:
    for recorded in sorted((root / SHARED_BROKERS).glob("*.port")):
        name = recorded.name.removesuffix(".port")
        security = "sasl_ssl" if name == "secure" else "plaintext"
        broker = LocalKafka(int(recorded.read_text()), home=recorded.parent / name,
                            security=security)  # fmt: skip
        if broker.down():
            logger.info("stopped the session's %s broker on %s", name, broker.bootstrap)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controlling process (not an xdist worker) stops the session's brokers."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory: pytest.TempPathFactory | None = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        _stop_shared_brokers(_session_root(factory))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bootstrap address of the session's broker (see the module docstring)."""
    configured = os.environ.get(BROKERS_ENV)
    if configured:
        _check_reachable(configured)
        return configured
    broker = _shared_broker(_session_root(tmp_path_factory), "plain")
    started = time.monotonic()
    bootstrap = broker.up(progress=logger.info)
    logger.info("session broker ready in %.1fs", time.monotonic() - started)
    return bootstrap


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> LocalKafka:
    """The session's secured broker (see the module docstring)."""
    broker = _shared_broker(_session_root(tmp_path_factory), "secure", security="sasl_ssl")
    broker.up(progress=logger.info)
    return broker


@pytest.fixture
def unique_name() -> UniqueName:
    """``unique_name(prefix)`` -> ``f"{prefix}-{uuid4().hex[:10]}"``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def kafka_admin(kafka_bootstrap: str) -> Any:
    """A fresh AdminClient on the session's broker, for this test.

    Not one per session: a stress run showed a long-lived client whose CreateTopics never
    completed after the broker had fenced itself and come back (a fresh client created the
    same topic in milliseconds), so every later topic of that process failed."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


# How long creating a test topic may take before the fixture fails: a hang guard, generous
# because a broker on a crowded CI machine can take tens of seconds to confirm one.
TOPIC_TIMEOUT = 120.0


def _wait_for_topic(admin: Any, name: str, partitions: int, timeout: float = TOPIC_TIMEOUT) -> None:
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


def _create_topic(admin: Any, new: NewTopic, timeout: float = TOPIC_TIMEOUT) -> None:
    """Create ``new``, asking again within ``timeout`` while the broker cannot take it yet:
    a transient error, or every broker fenced (a single broker whose heartbeat to its
    controller came late on a crowded machine answers INVALID_REPLICATION_FACTOR until its
    next heartbeat lands). A topic found to exist on a later try was created by an earlier
    one whose answer was lost."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        try:
            admin.create_topics([new], operation_timeout=timeout)[new.topic].result(timeout=timeout)
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            code = err.code() if err is not None else None
            if tries > 1 and code == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            retry = is_transient(exc) or code == KafkaError.INVALID_REPLICATION_FACTOR
            if not retry or time.monotonic() > deadline:
                raise KafkaOperationError(f"could not create topic {new.topic}: {exc}") from exc
            logger.warning("creating topic %s failed (%s); trying again", new.topic, exc)
            time.sleep(0.5)
        except TimeoutError as exc:
            raise KafkaOperationError(
                f"the broker did not confirm creating topic {new.topic} within {timeout:g}s"
            ) from exc


@pytest.fixture
def create_topic(kafka_admin: Any, unique_name: UniqueName) -> Iterator[CreateTopic]:
    """``create_topic(prefix, partitions=1, config=None) -> name`` (see the module docstring)."""
    created: list[str] = []

    def create(name_prefix: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(name_prefix)
        _create_topic(kafka_admin, NewTopic(name, num_partitions=partitions,
                                            config=dict(config or {})))  # fmt: skip
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
