"""The worker's side of global tables (``streamer.state.global_table``): restore every
partition of each global table's topic at start, then follow the topics while running.

Contract: :attr:`GlobalTables.ready` is set once every global table is restored to the end
its topic had when the restore began; until then no partition of the worker starts
processing (the table manager's ``gate``), so ``/ready`` answers 503 ("restoring") and no
agent can look up a table still filling. Afterwards one consumer (assigned, outside any
group, ``read_committed``) applies new records in batches, each batch written to a store
with the offset it reached, in one WriteBatch, so a restart resumes there.

Supervised (DESIGN §2 rule 12): transient Kafka errors are retried with backoff, at most
:data:`RETRIES` in a row; anything else, or retries exhausted, reports a RestoreFailed to
``on_fatal`` (the worker stops with one line). Consuming and RocksDB writes run in a worker
thread, one bounded step at a time; stopping waits for the step in progress, so a store is
never closed under a write.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import RestoreFailed
from streamer.kafka.admin import topic_ids
from streamer.kafka.backend import Backend, Consumer
from streamer.kafka.clients import describe, is_transient
from streamer.state.global_table import GlobalTable
from streamer.state.recovery import restore
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore, global_table_path

if TYPE_CHECKING:
    from streamer.app import App
    from streamer.kafka.backend import Admin
    from streamer.worker.tables import TableManager

log = logging.getLogger("streamer.tables")

BATCH = 5_000
RETRIES = 8  # transient failures in a row before giving up (about 30 s of backoff)
BACKOFF = 0.5  # seconds before the first retry, doubling ...
BACKOFF_MAX = 8.0  # ... up to this
_IGNORED = (KafkaError._PARTITION_EOF, KafkaError.GROUP_AUTHORIZATION_FAILED)


class GlobalTables:
    """Restores, then follows, the global tables of one worker (see the module docstring)."""

    def __init__(
        self,
        app_id: str,
        tables: list[GlobalTable],
        consumer_config: dict[str, Any],
        backend: Backend,
        state_dir: Path,
        *,
        on_fatal: Callable[[BaseException], None],
        topic_ids: dict[str, str] | None = None,
    ) -> None:
        self.app_id = app_id
        self.tables = tables
        self._config = consumer_config
        self._backend = backend
        self._state_dir = state_dir
        self._on_fatal = on_fatal
        self._topic_ids = topic_ids or {}
        self.ready = asyncio.Event()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: Consumer | None = None
        self._stores: dict[tuple[str, int], PartitionStore] = {}

    def start(self, partitions: dict[str, int]) -> None:
        """Restore then follow in the background; ``partitions``: each table's topic ->
        its partition count."""
        if not self.tables:
            self.ready.set()
            return
        self._task = asyncio.ensure_future(self._run(partitions))

    async def stop(self) -> None:
        """Stop following (after the step in progress) and close the stores."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._close()

    def _close(self) -> None:
        for table in self.tables:
            table.restored = False
            table.stores.clear()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    async def _run(self, partitions: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            for table in self.tables:
                for partition in range(partitions[table.topic]):
                    await self._supervised(loop, self._restore_one, table, partition)
                    if self._stop.is_set():
                        return
                table.restored = True
            log.info("global tables restored: %s", ", ".join(t.name for t in self.tables))
            self.ready.set()
            self._consumer = self._backend.consumer({
                **self._config,
                "group.id": f"streamer-global-{self.app_id}",  # a formality: assigned
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            })  # fmt: skip
            self._consumer.assign(
                [
                    TopicPartition(topic, p, store.meta_offset(CHANGELOG_OFFSET) or 0)
                    for (topic, p), store in self._stores.items()
                ]
            )
            while not self._stop.is_set():
                await self._supervised(loop, self._step)
        except Exception as exc:
            error = RestoreFailed(f"global tables: {describe(exc)}; the worker stops")
            log.error("%s", error, exc_info=not isinstance(exc, KafkaException))
            self._on_fatal(error)

    async def _supervised(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any
    ) -> None:
        """Run ``fn(*args)`` in a worker thread; retry transient errors with backoff."""
        for attempt in range(1, RETRIES + 1):
            try:
                await loop.run_in_executor(None, fn, *args)
                return
            except Exception as exc:
                if not is_transient(exc) or attempt == RETRIES or self._stop.is_set():
                    raise
                delay = min(BACKOFF * 2 ** (attempt - 1), BACKOFF_MAX)
                log.warning("global tables: %s; retrying in %.1fs (attempt %d of %d)",
                            describe(exc), delay, attempt + 1, RETRIES)  # fmt: skip
                await asyncio.sleep(delay)

    def _restore_one(self, table: GlobalTable, partition: int) -> None:
        """Open ``table``'s store of ``partition`` and bring it to the topic's end (thread)."""
        key = (table.topic, partition)
        store = self._stores.get(key)
        if store is None:
            path = global_table_path(self._state_dir, self.app_id, table.name) / str(partition)
            store = self._stores[key] = PartitionStore.open_or_rebuild(path)
            table.stores[partition] = store
        label = f"{self.app_id}-global-{table.name}[{partition}]"
        result = restore(store, label, table.topic, partition, self._config, self._backend,
                         self._stop, None, self._topic_ids.get(table.topic))  # fmt: skip
        # A topic with nothing in it leaves no position: record where following starts.
        if store.meta_offset(CHANGELOG_OFFSET) is None:
            store.apply({}, {CHANGELOG_OFFSET: result.end_offset})

    def _step(self) -> None:
        """Consume one batch and apply it to the stores (in a worker thread)."""
        assert self._consumer is not None
        writes: dict[tuple[str, int], dict[bytes, bytes | None]] = {}
        positions: dict[tuple[str, int], int] = {}
        failure: KafkaError | None = None
        for message in self._consumer.consume(BATCH, 0.2):
            error = message.error()
            if error is not None:
                if error.code() not in _IGNORED and failure is None:
                    failure = error
                continue
            where = (message.topic() or "", message.partition() or 0)
            key = message.key()
            if where not in self._stores:
                continue
            if key is not None:
                writes.setdefault(where, {})[key] = message.value()
            positions[where] = (message.offset() or 0) + 1
        for where, position in positions.items():
            batch = writes.get(where, {})
            self._stores[where].apply(batch, {CHANGELOG_OFFSET: position})
        for table in self.tables:
            table.applied += sum(len(b) for (t, _), b in writes.items() if t == table.topic)
        if failure is not None:
            # Raised only now: what was consumed is applied, so positions and stores agree.
            raise KafkaException(failure)


def start_global_tables(
    app: App,
    brokers: str,
    backend: Backend,
    manager_of_tables: TableManager,
    on_fatal: Callable[[BaseException], None],
    admin: Admin,
    counts: dict[str, int],
    client_config: dict[str, Any],
) -> GlobalTables | None:
    """Start restoring ``app``'s global tables (None when it has none) and close the table
    manager's gate until they are restored. ``counts``: partitions per topic."""
    tables = list(app.global_tables.values())
    if not tables:
        return None
    manager = GlobalTables(
        app.id, tables, {"bootstrap.servers": brokers, **client_config},
        backend, manager_of_tables.state_dir, on_fatal=on_fatal,
        topic_ids=topic_ids(admin, [t.topic for t in tables]),
    )  # fmt: skip
    manager_of_tables.gate = manager.ready
    manager.start({t.topic: counts[t.topic] for t in tables})
    return manager
