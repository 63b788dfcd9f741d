"""The backend seam: the Kafka clients streamer uses, as Protocols, and who builds them.

Everything in streamer that talks to Kafka gets its clients from a :class:`Backend` handed
down by its caller (the worker passes its own to tables, standbys, recovery and the
checkpoint; CLI tools build a :class:`ConfluentBackend`). Two implementations exist:

- :class:`ConfluentBackend`: real confluent-kafka clients (the default);
- :class:`streamer.kafka.memory.MemoryBackend`: the in-memory broker that
  ``streamer.testing.TestDriver`` runs the same worker over.

``streamer.testing.faults.FaultyBackend`` wraps either one and fails chosen calls on cue.
The choice is explicit (``Worker(app, backend=...)``), never inferred from an address.

The Protocols list exactly the methods streamer calls, with the contract each one keeps
(librdkafka's, which the in-memory clients reproduce). Types the clients exchange
(``TopicPartition``, ``KafkaError``, group metadata, admin futures) are confluent-kafka's
own, which every backend uses too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol

from confluent_kafka import Consumer as _ConfluentConsumer
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import Producer as _ConfluentProducer
from confluent_kafka.admin import AdminClient as _ConfluentAdmin
from confluent_kafka.cimpl import NewTopic

from streamer.errors import KafkaUnavailableError
from streamer.kafka.access import ACCESS_FAILURES, refused_connection

Config = dict[str, Any]
"""A complete librdkafka configuration (``bootstrap.servers``, ``group.id``, ...), with
callbacks (``error_cb``, ``logger``, ``on_delivery``) as confluent-kafka accepts them."""

RebalanceCallback = Callable[[Any, list[Any]], None]
# Headers as librdkafka hands them out (a list of pairs; a dict on the producing side).
RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class Message(Protocol):
    """A consumed record, or an event (``error()`` not None: partition EOF, a fetch error)."""

    def error(self) -> KafkaError | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> RawHeaders | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Consumer(Protocol):
    """A consumer, in a group (``subscribe``) or reading assigned partitions (``assign``).

    Contract:

    - ``consume``/``poll`` never commit: offsets move only through :meth:`commit` with
      explicit offsets (``enable.auto.commit`` and ``enable.auto.offset.store`` are off).
    - Rebalance callbacks given to :meth:`subscribe` run *inside* ``consume``/``poll`` (and
      ``close``), on the calling thread, never concurrently with it.
    - ``consume(n, 0)`` never blocks; a timeout bounds how long an empty call waits.
    - Errors that concern one partition come back as messages whose ``error()`` is set
      (``_PARTITION_EOF`` with ``enable.partition.eof``); calls that fail as a whole raise
      ``KafkaException`` carrying a ``KafkaError``.
    - Not thread-safe: one thread uses a consumer at a time.
    """

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = ...,
        on_revoke: RebalanceCallback | None = ...,
        on_lost: RebalanceCallback | None = ...,
    ) -> None:
        """Join the group for ``topics``; the assignment arrives inside a later consume."""

    def assign(self, partitions: list[TopicPartition], /) -> None:
        """Read exactly ``partitions`` (their offsets are start positions)."""

    def consume(self, num_messages: int = ..., timeout: float = ...) -> Sequence[Message]:
        """Up to ``num_messages`` messages, waiting at most ``timeout`` seconds for the first."""

    def poll(self, timeout: float = ...) -> Message | None:
        """One message, or None after ``timeout`` seconds."""

    def pause(self, partitions: list[TopicPartition], /) -> None:
        """Stop fetching ``partitions`` (their positions are kept)."""

    def resume(self, partitions: list[TopicPartition], /) -> None:
        """Fetch ``partitions`` again."""

    def seek(self, partition: TopicPartition, /) -> None:
        """Move an assigned partition's position to ``partition.offset``."""

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]:
        """Commit explicit ``offsets``, synchronously (the only way streamer commits);
        raises ``KafkaException`` when the group coordinator refuses (a rebalance in
        progress, an unknown member, ...)."""

    def committed(
        self, partitions: list[TopicPartition], /, timeout: float = ...
    ) -> list[TopicPartition]:
        """The group's committed offsets (``-1001`` where none); raises ``KafkaException``
        when the group coordinator does not answer (``NOT_COORDINATOR`` while it moves)."""

    def assignment(self) -> list[TopicPartition]:
        """The partitions currently assigned (by the group or by :meth:`assign`)."""

    def position(self, partitions: list[TopicPartition], /) -> list[TopicPartition]:
        """The next fetch offsets of assigned partitions."""

    def get_watermark_offsets(
        self, partition: TopicPartition, /, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]:
        """(low, high) watermarks; raises ``KafkaException`` (``_TIMED_OUT``) when the broker
        does not answer within ``timeout``."""

    def offsets_for_times(
        self, partitions: list[TopicPartition], /, timeout: float = ...
    ) -> list[TopicPartition]:
        """The first offset at or after each partition's ``offset`` (a timestamp, ms)."""

    def consumer_group_metadata(self) -> Any:
        """What a transactional producer's ``send_offsets_to_transaction`` needs."""

    def close(self) -> None:
        """Leave the group (running the revoke callback) and release the client."""


class Producer(Protocol):
    """A producer, idempotent or transactional (``transactional.id`` set).

    Contract:

    - :meth:`produce` only enqueues: it may raise ``BufferError`` when the local queue is
      full (serve :meth:`poll` and try again); a record the broker refuses is reported later,
      to the per-record ``on_delivery`` callback (or the configured global one), from inside
      :meth:`poll` or :meth:`flush`, on the calling thread.
    - A transactional producer's records belong to the open transaction (begin it first).
      A delivery failure inside it makes the transaction abortable: the next
      ``send_offsets_to_transaction``/``commit_transaction`` raises a ``KafkaException``
      whose error has ``txn_requires_abort()``; after ``abort_transaction`` a new one can
      begin. A ``retriable()`` error may be retried by calling the same method again; a
      ``fatal()`` error (fenced by a newer producer with the same transactional.id) leaves
      the producer unusable.
    """

    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        partition: int = ...,
        *,
        on_delivery: Any = ...,
        timestamp: int = ...,
        headers: Any = ...,
    ) -> None:
        """Enqueue one record (see the class contract)."""

    def poll(self, timeout: float = ...) -> int:
        """Serve delivery callbacks; returns how many were served."""

    def flush(self, timeout: float = ...) -> int:
        """Wait until every enqueued record is acknowledged or failed; returns how many are
        still in the queue after ``timeout``."""

    def init_transactions(self, timeout: float = ...) -> None:
        """Register the transactional.id, fencing any older producer with the same id."""

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, /, timeout: float = ...
    ) -> None:
        """Add consumer offsets to the open transaction (committed with it)."""

    def commit_transaction(self, timeout: float = ...) -> None:
        """Commit the open transaction: flushes its records first."""

    def abort_transaction(self, timeout: float = ...) -> None:
        """Abort the open transaction: its records and offsets are never visible."""

    def close(self) -> object:
        """Release the client now (confluent-kafka returns whether it could): an
        ``init_transactions`` that timed out with its request still on its way never lands
        afterwards (a producer merely dropped keeps going until it is garbage-collected)."""


class Admin(Protocol):
    """An admin client. Operations return futures keyed by name (confluent-kafka's shape);
    a future's ``result`` raises ``KafkaException`` for that item's failure."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """Cluster metadata (``topic=None, timeout=...``): ``.topics`` maps name -> metadata
        with ``.partitions`` and ``.error``; raises ``KafkaException`` when no broker
        answers within ``timeout``."""

    def create_topics(
        self, new_topics: list[NewTopic], /, *, operation_timeout: float = ...
    ) -> dict[str, Future[Any]]:
        """Per topic a future of its creation (``TOPIC_ALREADY_EXISTS`` when it exists)."""

    def delete_topics(
        self, topics: list[str], /, *, operation_timeout: float = ...
    ) -> dict[str, Future[Any]]: ...

    def describe_topics(
        self, topics: TopicCollection, /, *, request_timeout: float = ...
    ) -> dict[str, Future[Any]]:
        """Per topic a future of its description, with ``.topic_id`` (a new id each time a
        topic of that name is created)."""

    def describe_consumer_groups(
        self, group_ids: list[str], /, *, request_timeout: float = ...
    ) -> dict[str, Future[Any]]:
        """Per group a future of its description: ``.state`` and ``.members``, each member
        with ``.assignment.topic_partitions`` (``GROUP_ID_NOT_FOUND`` for no such group)."""

    def alter_consumer_group_offsets(
        self, requests: list[ConsumerGroupTopicPartitions], /
    ) -> dict[str, Future[Any]]: ...


class Backend(Protocol):
    """Builds the clients. ``config`` is the complete librdkafka configuration (callers
    add streamer's defaults, see :mod:`streamer.kafka.clients`); a backend may ignore
    options that mean nothing to it. Methods are safe to call from any thread."""

    def consumer(self, config: Config) -> Consumer: ...

    def producer(self, config: Config) -> Producer: ...

    def admin(self, config: Config) -> Admin: ...

    def check_reachable(self, admin: Admin, brokers: str, timeout: float = ...) -> None:
        """Raise :class:`~streamer.errors.KafkaUnavailableError` (one line naming
        ``brokers`` and the fix) when no broker answers through ``admin`` in ``timeout``."""


log = logging.getLogger(__name__)

# The last connection error each address's admin clients reported (error_cb), so that
# check_reachable can say why no broker answered.
_last_admin_error: dict[str, str] = {}
# The authentication or TLS failure each address's admin clients reported: check_reachable
# stops at the first one (retrying cannot fix it).
_access_failure: dict[str, str] = {}
# How long check_reachable waits in all for a broker that accepted the connection but has
# not answered yet, before it says the broker is unreachable.
SLOW_BROKER_WAIT = 30.0


def _serve_callbacks(admin: Admin) -> None:
    """Run the error callbacks librdkafka queued for ``admin`` (they run only on poll)."""
    poll = getattr(admin, "poll", None)
    if poll is not None:
        poll(0)


class ConfluentBackend:
    """Real Kafka through confluent-kafka (librdkafka)."""

    def consumer(self, config: Config) -> Consumer:
        consumer: Consumer = _ConfluentConsumer(config)
        return consumer

    def producer(self, config: Config) -> Producer:
        producer: Producer = _ConfluentProducer(config)
        return producer

    def admin(self, config: Config) -> Admin:
        if "error_cb" not in config:  # kept for check_reachable to say what went wrong
            brokers = str(config.get("bootstrap.servers", ""))

            def remember(err: KafkaError) -> None:
                _last_admin_error[brokers] = err.str()
                if err.code() in ACCESS_FAILURES:
                    _access_failure[brokers] = err.str()

            config = {**config, "error_cb": remember}
        admin: Admin = _ConfluentAdmin(config)
        return admin

    def check_reachable(self, admin: Admin, brokers: str, timeout: float = 5.0) -> None:
        """After ``timeout`` seconds (the ``connect_timeout`` setting) give up if the client
        reported a connection error meanwhile (refused, name not resolved ...): nothing is
        listening there. A broker that accepted the connection but is slow to answer (a busy
        machine, a JVM still starting) gets up to :data:`SLOW_BROKER_WAIT` seconds in all,
        with a warning. The message names the address, what was tried and librdkafka's last
        connection error.

        A broker that refuses the credentials or the TLS handshake ends the wait at once with
        :class:`~streamer.errors.KafkaAccessError` (retrying cannot fix either)."""
        _last_admin_error.pop(brokers, None)  # only errors of this probe count
        _access_failure.pop(brokers, None)
        started = time.monotonic()
        failure = self._probe(admin, brokers, started + timeout)
        if failure is None:
            return
        waited = timeout
        if brokers not in _last_admin_error:
            extra = max(SLOW_BROKER_WAIT - timeout, timeout)
            log.warning(
                "Kafka at %s has not answered within %gs; waiting up to %gs more",
                brokers, timeout, extra,
            )  # fmt: skip
            waited += extra
            failure = self._probe(admin, brokers, time.monotonic() + extra)
            if failure is None:
                return
        err = failure.args[0] if failure.args else None
        cause = _last_admin_error.get(brokers) or (
            err.str() if isinstance(err, KafkaError) else str(failure)
        )
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {brokers}: no broker answered a metadata request within "
            f"{waited:g}s ({cause}); is the broker running? `streamer kafka up` starts a "
            "local one; --timeout (STREAMER_CONNECT_TIMEOUT) waits longer"
        ) from failure

    @staticmethod
    def _probe(admin: Admin, brokers: str, deadline: float) -> KafkaException | None:
        """Ask for metadata until ``deadline``, in short slices so that an authentication or
        TLS failure (seen only by serving error_cb between them) ends it at once. None once
        a broker answered, else the last failure."""
        while True:
            try:
                admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                return None
            except KafkaException as exc:
                failure = exc
            _serve_callbacks(admin)
            refused = _access_failure.get(brokers)
            if refused is not None:
                raise refused_connection(brokers, refused) from None
            if time.monotonic() >= deadline:
                return failure

    def __repr__(self) -> str:
        return "ConfluentBackend()"


__all__ = [
    "Admin",
    "Backend",
    "Config",
    "ConfluentBackend",
    "Consumer",
    "Message",
    "Producer",
    "RawHeaders",
    "RebalanceCallback",
]
