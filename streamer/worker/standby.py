"""Standby replicas: warm copies of table partitions this worker does not own.

With ``standby_replicas >= 1`` a worker follows the changelog of every table partition it
does not own, into the same local store path an owner would use, and records the changelog
offset it reached. When such a partition is handed to this worker, recovery starts from
that offset and restores only the tail. (Today every worker follows every partition it does
not own: enough for the common one-standby case of two or three workers; a placement that
follows exactly N copies across a larger group is future work.)

Runs as one asyncio task with one consumer; consuming and writing RocksDB happen in a
worker thread, one step at a time, and a partition is handed back to its new owner only
between steps, so the active and the standby never hold the same store at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import RestoreFailed
from streamer.kafka.backend import Backend, Consumer
from streamer.kafka.clients import describe, is_transient
from streamer.state.keyed import KeyedTable
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore


class StandbyTables(Protocol):
    """What the standby needs of the worker's tables (its TableManager is one): whose they
    are, which, and where each partition is stored."""

    @property
    def app_id(self) -> str: ...
    @property
    def tables(self) -> Sequence[KeyedTable[Any, Any]]: ...
    def path(self, table_name: str, partition: int) -> Path: ...


_GROUP_DENIED = KafkaError.GROUP_AUTHORIZATION_FAILED
log = logging.getLogger("streamer.standby")

BATCH = 5_000
RETRIES = 8  # transient failures in a row before the standby gives up
BACKOFF = 0.5  # seconds before the first retry, doubling ...
BACKOFF_MAX = 8.0  # ... up to this


class StandbyManager:
    """Follows the changelogs of non-owned table partitions."""

    def __init__(
        self,
        tables: StandbyTables,
        consumer_config: dict[str, Any],
        backend: Backend,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._tables = tables
        self._backend = backend
        self._on_fatal = on_fatal  # told (on the loop) when following fails for good
        self._consumer_config = consumer_config
        self._stores: dict[tuple[str, int], PartitionStore] = {}  # (changelog, partition)
        self._positions: dict[tuple[str, int], int] = {}
        self._owned: set[int] = set()
        self._lock = asyncio.Lock()
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    def start(self) -> None:
        self._consumer = self._backend.consumer(
            {
                **self._consumer_config,
                "group.id": f"streamer-standby-{self._tables.app_id}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        async with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    async def take(self, partition: int) -> None:
        """This worker now owns ``partition``: stop following it and close its stores, so
        the owner can open them (at the offset the standby reached)."""
        self._owned.add(partition)
        async with self._lock:
            for key in [k for k in self._stores if k[1] == partition]:
                self._stores.pop(key).close()
                self._positions.pop(key, None)
            self._reassign()

    async def give_back(self, partition: int) -> None:
        """This worker no longer owns ``partition`` (its owner closed the stores): follow it."""
        self._owned.discard(partition)
        async with self._lock:
            if partition in self._owned or self._consumer is None:
                return  # assigned back meanwhile, or stopping
            self._follow(partition)
            self._reassign()

    async def follow_unowned(self, partitions: int) -> None:
        """Follow every partition (of ``partitions``) not owned, once the worker has its
        first assignment."""
        async with self._lock:
            for partition in range(partitions):
                if partition not in self._owned:
                    self._follow(partition)
            self._reassign()
            log.info("standby: following %d table partition(s)", len(self._stores))

    def _follow(self, partition: int) -> None:
        for table in self._tables.tables:
            key = (table.changelog, partition)
            if key in self._stores:
                continue
            store = PartitionStore.open_or_rebuild(self._tables.path(table.name, partition))
            self._stores[key] = store
            self._positions[key] = store.meta_offset(CHANGELOG_OFFSET) or 0

    def _reassign(self) -> None:
        if self._consumer is not None:
            self._consumer.assign(
                [TopicPartition(t, p, self._positions[(t, p)]) for t, p in self._stores]
            )

    async def _run(self) -> None:
        """Supervised: transient Kafka errors are retried with backoff (at most
        ``RETRIES`` in a row); anything else closes the standby's stores and reports a
        RestoreFailed to ``on_fatal``. Never leaves an exception in the task."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not self._stores:
                await asyncio.sleep(0.5)
                continue
            try:
                async with self._lock:
                    await loop.run_in_executor(None, self._step)
                failures = 0
            except Exception as exc:
                failures += 1
                if not is_transient(exc) or failures >= RETRIES:
                    await self._fail(exc, failures)
                    return
                delay = min(BACKOFF * 2 ** (failures - 1), BACKOFF_MAX)
                log.warning(
                    "standby: following changelogs failed (%s); retrying in %.1fs (%d of %d)",
                    describe(exc),
                    delay,
                    failures + 1,
                    RETRIES,
                )
                await asyncio.sleep(delay)

    async def _fail(self, exc: Exception, attempts: int) -> None:
        where = ", ".join(f"{t}[{p}]" for t, p in sorted(self._stores)) or "no partition"
        tried = f" (after {attempts} attempts)" if is_transient(exc) else ""
        error = RestoreFailed(
            f"standby replica of {where} failed{tried}: {describe(exc)}; the worker stops"
        )
        log.error("%s", error, exc_info=not isinstance(exc, KafkaException))
        async with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
        if self._on_fatal is not None:
            self._on_fatal(error)

    def _step(self) -> None:
        """Consume one batch and apply it to the stores (in a worker thread)."""
        assert self._consumer is not None
        writes: dict[tuple[str, int], dict[bytes, bytes | None]] = {}
        failure: KafkaError | None = None
        for message in self._consumer.consume(BATCH, 0.2):
            error = message.error()
            if error is not None:
                # Its group id is a formality (assign, no commits), so no ACL grants it.
                ignored = error.code() in (KafkaError._PARTITION_EOF, _GROUP_DENIED)
                if not ignored and failure is None:
                    failure = error
                continue
            key = (message.topic() or "", message.partition() or 0)
            if key not in self._stores or message.key() is None:
                continue
            writes.setdefault(key, {})[message.key()] = message.value()  # type: ignore[index]
            self._positions[key] = (message.offset() or 0) + 1
        for key, batch in writes.items():
            self._stores[key].apply(batch, {CHANGELOG_OFFSET: self._positions[key]})
            self.applied += len(batch)
        if failure is not None:
            # Raised only now: what was consumed is applied, so positions and stores agree.
            raise KafkaException(failure)  # _run decides: retry, or stop
