"""The worker's side of tables: changelog topics, opening and restoring a partition's stores
on assignment, and closing them on revoke.

A source partition's lanes start only when every table partition co-partitioned with it is
restored (``PartitionState.ready``); the other partitions keep flowing meanwhile. Restores
are supervised: transient Kafka errors are retried with backoff (bounded); any other
failure, or retries exhausted, closes the partition's stores and reports a
:class:`~streamer.errors.RestoreFailed` to the worker's ``on_fatal``, which stops it. A store is
never opened while a previous handle on the same path is still open (a partition that comes
back to this worker waits for its old recovery to finish), so RocksDB's lock never bites.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.app import App
from streamer.errors import ConfigError, RestoreFailed
from streamer.kafka.admin import TopicSpec
from streamer.kafka.backend import Backend
from streamer.kafka.clients import describe, is_transient
from streamer.state.keyed import TablePartition
from streamer.state.recovery import RecoveryResult, restore
from streamer.state.store import PartitionStore, partition_path
from streamer.worker.copartition import check_counts, table_sources
from streamer.worker.inline import drain_inline
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.partition import PartitionState
from streamer.worker.standby import StandbyManager

log = logging.getLogger("streamer.tables")

CHANGELOG_CONFIG = {"cleanup.policy": "compact"}
# A restore retries transient errors this many times in all, backing off from RESTORE_BACKOFF
# seconds, doubling up to RESTORE_BACKOFF_MAX: about 30 s before the worker gives up.
RESTORE_ATTEMPTS = 8
RESTORE_BACKOFF = 0.5
RESTORE_BACKOFF_MAX = 8.0


class TableManager:
    """Opens, restores and closes the table partitions of the partitions this worker owns."""

    def __init__(
        self,
        app: App,
        consumer_config: dict[str, Any],
        backend: Backend,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
        state_dir: Path | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.app = app
        self.backend = backend  # restore consumers (and the standby's) come from it
        # Called (on the loop) with a RestoreFailed when a restore fails for good.
        self.on_fatal = on_fatal
        self.state_dir = Path(app.settings.state_dir) if state_dir is None else state_dir
        self.tables = list(app.tables.values())
        self._consumer_config = consumer_config
        self._open: dict[Path, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.restored_records = 0
        self.standby: StandbyManager | None = None
        self.source_topic: str | None = None  # the first of source_topics (for messages)
        # The co-partitioned topics whose partitions own the tables (by partition number).
        self.source_topics: set[str] = set()
        # Partition number -> the table partitions of it, shared by every owned partition
        # of that number (one restore, one set of stores).
        self._holdings: dict[int, _Holding] = {}
        # Set by the worker when the app has global tables: no partition starts before it.
        self.gate: asyncio.Event | None = None
        self._gated: dict[PartitionState, asyncio.Task[None]] = {}  # waiting for the gate
        self.metrics = metrics  # the worker's, for recovery progress
        # Kafka's id of each changelog topic (set by the worker at start; empty: unknown).
        self.changelog_ids: dict[str, str] = {}

    def changelog_specs(self, source_partitions: dict[str, int]) -> list[TopicSpec]:
        """Changelog topics, co-partitioned with the topics that own the tables (DESIGN §2
        rule 6; see :mod:`streamer.worker.copartition`): those all have the same partition
        count (ConfigError naming both counts otherwise), and table partition *p* belongs
        to partition number *p* of any of them."""
        if not self.tables:
            return []
        sources = table_sources(self.app)
        source_partitions = {n: c for n, c in source_partitions.items() if n in sources}
        if any(a.held for a in self.app.agents if not a.internal):
            raise ConfigError(
                f"app {self.app.id!r} has tables and an agent with retry_topics (non-blocking "
                "retries read retry topics too, and would apply a key's events out of order "
                "to its tables): use blocking retries (the default) for agents with tables"
            )
        count = check_counts(dict(source_partitions))
        if count is None:  # a replay of a topic that owns no table (a group_by's source)
            self.source_topics = set()
            return []
        self.source_topics = set(source_partitions)
        self.source_topic = min(source_partitions)
        specs = []
        for table in self.tables:
            if table.partitions is not None and table.partitions != count:
                raise ConfigError(
                    f"table {table.name!r} is declared with {table.partitions} partitions but "
                    f"its source topic {self.source_topic!r} has {count}; they must match"
                )
            table.partitions = count
            specs.append(TopicSpec(table.changelog, count, None, dict(CHANGELOG_CONFIG)))
        return specs

    @property
    def app_id(self) -> str:
        return self.app.id

    def path(self, table_name: str, partition: int) -> Path:
        return partition_path(self.state_dir, self.app.id, table_name, partition)

    def start(self, state: PartitionState) -> None:
        """Start ``state``'s tables (below), once the ``gate`` is open: the worker's global
        tables are restored (streamer.worker.global_tables)."""
        gate = self.gate
        if gate is None or gate.is_set():
            self._start(state)
            return

        async def when_open() -> None:
            await gate.wait()
            del self._gated[state]
            self._start(state)

        # Cancelled when the partition is released first (the gate may never open: global
        # tables that fail to restore stop the worker).
        task = self._gated[state] = asyncio.ensure_future(when_open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self, state: PartitionState) -> None:
        """Give ``state`` its table partitions, restored in the background (once per
        partition number, whichever co-partitioned topic's partition came first), then set
        ``state.ready``. Partitions of other topics own no table partition: ready at once."""
        if not self.tables or state.topic not in self.source_topics:
            state.ready.set()
            return
        holding = self._holdings.get(state.partition)
        if holding is None:
            holding = self._holdings[state.partition] = _Holding(state.partition)
            task = asyncio.ensure_future(self._restore(holding))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        holding.states.add(state)
        state.tables = holding.parts  # shared: the checkpoint writes each part once
        if holding.restored:
            _set_ready([state])

    async def _restore(self, holding: _Holding) -> None:
        """Supervised: a failure that survives its retries closes the partition's stores and
        reports a RestoreFailed to ``on_fatal`` (the worker stops); nothing is left raised
        in the task for nobody to see."""
        try:
            await self._restore_tables(holding)
        except Exception as exc:
            self._failed(holding, exc)
            return
        if holding.cancel.is_set():  # released meanwhile: the stores are ours to close
            self._close(holding)
            return
        for part in holding.parts:
            part.table.attach(part)
        holding.restored = True
        _set_ready(list(holding.states))

    async def _restore_tables(self, holding: _Holding) -> None:
        loop = asyncio.get_running_loop()
        partition, cancel = holding.partition, holding.cancel
        if self.standby is not None:  # a warm copy: the standby hands its stores over
            await self.standby.take(partition)
        for table in self.tables:
            path = self.path(table.name, partition)
            while path in self._open:  # a previous owner of this path is still closing
                await self._open[path].wait()
            self._open[path] = asyncio.Event()
            try:
                store = await loop.run_in_executor(None, PartitionStore.open_or_rebuild, path)
            except BaseException:
                self._release_path(path)
                raise
            part = TablePartition(table, partition, store)
            holding.parts.append(part)
            if cancel.is_set():
                return
            result = await self._restore_part(part, cancel)
            if result is None:  # revoked while retrying
                return
            part.changelog_end = result.end_offset
            self.restored_records += result.restored

    async def _restore_part(
        self, part: TablePartition, cancel: threading.Event
    ) -> RecoveryResult | None:
        """Restore one table partition; transient Kafka errors (a topic's metadata lagging
        its creation, a leader moving, a timeout) are retried with backoff, at most
        :data:`RESTORE_ATTEMPTS` times in all. Raises RestoreFailed otherwise; returns None
        when the partition was revoked meanwhile."""
        loop = asyncio.get_running_loop()
        table = part.table
        progress = self.metrics.recovery_progress(part) if self.metrics else None
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(
                    None,
                    restore,
                    part.store,
                    part.label,
                    table.changelog,
                    part.partition,
                    self._consumer_config,
                    self.backend,
                    cancel,
                    progress,
                    self.changelog_ids.get(table.changelog),
                )
            except Exception as exc:
                if cancel.is_set():
                    return None
                transient = is_transient(exc)
                if not transient or attempt == RESTORE_ATTEMPTS:
                    tried = f" (after {attempt} attempts)" if transient else ""
                    raise RestoreFailed(
                        f"restoring table {table.name!r} partition {part.partition} from "
                        f"{table.changelog!r} failed{tried}: {describe(exc)}; the worker stops"
                    ) from exc
                delay = min(RESTORE_BACKOFF * 2 ** (attempt - 1), RESTORE_BACKOFF_MAX)
                log.warning(
                    "%s: restoring failed (%s); retrying in %.1fs (attempt %d of %d)",
                    part.label,
                    describe(exc),
                    delay,
                    attempt + 1,
                    RESTORE_ATTEMPTS,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _failed(self, holding: _Holding, exc: Exception) -> None:
        """Stop restoring ``holding`` for good: close and release its stores, tell the
        worker."""
        error = (
            exc
            if isinstance(exc, RestoreFailed)
            else RestoreFailed(
                f"restoring the tables of partition {holding.partition} failed: "
                f"{describe(exc)}; the worker stops"
            )
        )
        log.error("%s", error, exc_info=not isinstance(exc, RestoreFailed))
        if self._holdings.get(holding.partition) is holding:
            del self._holdings[holding.partition]
        self._close(holding, give_back=False)
        if self.on_fatal is not None:
            self.on_fatal(error)

    def release(self, state: PartitionState) -> None:
        """``state`` is no longer ours. When it was the last owned partition of its number,
        close the table partitions, or stop their recovery first (which closes them)."""
        gated = self._gated.pop(state, None)
        if gated is not None:
            gated.cancel()
            return
        holding = self._holdings.get(state.partition)
        if holding is None or state not in holding.states:
            return
        holding.states.discard(state)
        state.tables = []
        if holding.states:  # a co-partitioned partition of the same number stays here
            return
        del self._holdings[state.partition]
        if not holding.restored:
            holding.cancel.set()  # the recovery task closes the stores when it returns
            return
        self._close(holding)

    def _close(self, holding: _Holding, *, give_back: bool = True) -> None:
        for part in holding.parts:
            part.table.detach(part.partition)
            # Committed writes RocksDB does not have yet: the next owner of this store (a
            # restart, a standby, this worker again) then restores less from the changelog.
            # Not writing them loses nothing (the changelog has them), so a failure here
            # only costs that restore.
            try:
                part.persist(time.monotonic())
            except Exception as exc:  # rocksdict raises plain Exception
                log.warning(
                    "%s: writing its last committed changes to local state failed (%s); "
                    "they are restored from the changelog when it is next assigned",
                    part.label,
                    exc,
                )
            part.store.close()
            self._release_path(part.store.path)
        holding.parts.clear()
        if give_back and self.standby is not None:  # keep following it, warm, from there
            task = asyncio.ensure_future(self.standby.give_back(holding.partition))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release_path(self, path: Path) -> None:
        """The store at ``path`` is closed: whoever waits to open it may go on."""
        closed = self._open.pop(path, None)
        if closed is not None:
            closed.set()

    async def wait_idle(self) -> None:
        """Wait for recoveries still running (after their partitions were released)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Holding:
    """The table partitions of one partition number on this worker, and the owned
    partitions (of the co-partitioned topics) that share them."""

    __slots__ = ("cancel", "partition", "parts", "restored", "states")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.parts: list[TablePartition] = []
        self.states: set[PartitionState] = set()
        self.cancel = threading.Event()  # set when released before its restore finished
        self.restored = False


def _set_ready(states: list[PartitionState]) -> None:
    """The tables of ``states`` are restored: tables built from a topic first apply the
    records fetched meanwhile (see streamer.worker.inline), then every lane may start."""
    drain_inline(states)
    for state in states:
        state.ready.set()
