"""TestDriver: run an app's real worker over an in-memory broker, on a simulated clock.

The driver is not a second runtime (DESIGN §4): it starts the production
:class:`~streamer.worker.Worker` with a :class:`~streamer.kafka.memory.MemoryBackend` (clients
on an in-memory broker, ``streamer.kafka.memory``) and a
:class:`~streamer.testing.clock.SimulatedClock`. Ordering, staging, checkpoints, error
policies and dead letters are therefore those of production; only the broker and time are
simulated.

The driver passes its own settings and backend to the worker
(``Worker(app, settings=..., backend=...)``): the app's settings with
``{"brokers": "memory://<name>", "state_dir": <temp dir>, "web_port": None}`` (the brokers
value is only a label in log lines). Sends and asks from the test's own code, outside agents,
go to the memory broker through :func:`streamer.outside.redirect`, for the code running in
the driver's context. The app itself (its settings, topics, agents, tables) is not changed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from streamer.app import App
from streamer.clock import to_millis
from streamer.errors import ConfigError, StreamerError
from streamer.events import Event, Headers
from streamer.kafka.memory import MemoryBackend, MemoryBroker, Record, partition_for
from streamer.kafka.memory_consumer import MemoryConsumer
from streamer.outside import Outside, Redirection, redirect, restore
from streamer.settings import Settings
from streamer.state.store import CHANGELOG_OFFSET
from streamer.state.windows import OnLate, WindowedTable
from streamer.testing.clock import SimulatedClock
from streamer.worker import Worker
from streamer.worker.partition import PartitionState
from streamer.worker.tables import TableManager

T = TypeVar("T")

SETTLE_TIMEOUT = 10.0  # real seconds settle() waits before saying what is stuck


class TestDriver:
    """Drive ``app`` in memory: ``send`` (or ``send_raw``) records, ``settle``, read
    ``records``, ``table`` contents and ``late_events``, ``advance`` simulated time.

    ``async with TestDriver(app) as driver:`` starts the worker (tables pre-filled by
    :meth:`set_table` first) and stops it cleanly on exit, re-raising an error that stopped
    it (such as :class:`~streamer.errors.AgentFailed`); :meth:`run` does the same from sync
    code. Not thread-safe: drive it from one event loop.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, app: App, *, start: float | None = None) -> None:
        self.app = app
        self.clock = SimulatedClock(start)
        self.broker = MemoryBroker(f"driver-{uuid.uuid4().hex[:12]}", clock=self.clock.time)
        self.backend = MemoryBackend(self.broker)
        self._state_dir = tempfile.TemporaryDirectory(prefix="streamer-driver-")
        # What the worker runs with; the app's own settings are left as they are.
        self.settings: Settings = app.settings.model_copy(
            update={
                "brokers": self.broker.address,
                "state_dir": Path(self._state_dir.name),
                "web_port": None,
            }
        )
        self._outside: Outside | None = None
        self._redirection: Redirection | None = None
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self._prefill: dict[str, dict[Any, Any]] = {}
        self._late: dict[str, list[Event]] = {}
        self._late_restore: list[tuple[WindowedTable[Any, Any], OnLate | None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def run(
        cls, app: App, scenario: Callable[[TestDriver], Awaitable[T]], *, start: float | None = None
    ) -> T:
        """The sync helper: run ``scenario(driver)`` in a fresh event loop, the driver
        started around it, and return what it returns (for plain, non-async tests)."""

        async def main() -> T:
            async with cls(app, start=start) as driver:
                return await scenario(driver)

        return asyncio.run(main())

    async def __aenter__(self) -> TestDriver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(raise_errors=exc is None)

    async def start(self) -> None:
        """Start the app's worker on a fresh memory broker, in the background. The app is
        not changed: the worker gets the driver's settings and backend, and sends and asks
        from the test's own code (outside agents) are redirected to the memory broker for
        the code running in this context (:func:`streamer.outside.redirect`)."""
        if self._task is not None:
            raise StreamerError("this TestDriver is already started")
        self._outside = Outside(self.app.id, self.settings, self.backend)
        self._redirection = redirect(self._outside)
        try:
            self._create_topics()
            self._watch_late()
            for name, content in self._prefill.items():
                self._write_changelog(name, content)
            self._worker = Worker(
                self.app,
                settings=self.settings,
                backend=self.backend,
                handle_signals=False,
                clock=self.clock,
            )
            self._task = asyncio.create_task(self._worker.run())
            await self._wait_joined()
        except BaseException:
            await self.stop(raise_errors=False)
            raise

    async def stop(self, *, raise_errors: bool = True) -> None:
        """Stop the worker (in-flight events finish, offsets commit), end the redirection of
        sends, drop the broker and state. Re-raises what stopped the worker, if anything."""
        error: BaseException | None = None
        try:
            if self._worker is not None and self._task is not None:
                self._worker.stop()
                try:
                    await asyncio.wait_for(self._task, 60)
                except Exception as exc:  # the worker's own failure (AgentFailed, ...)
                    error = exc
        finally:
            for windowed, on_late in self._late_restore:
                windowed.on_late = on_late
            self._late_restore.clear()
            if self._redirection is not None and self._outside is not None:
                restore(self._redirection, self._outside)
                self._redirection = self._outside = None
            self._state_dir.cleanup()
        if error is not None and raise_errors:
            raise error

    def _create_topics(self) -> None:
        """Every declared topic, as the worker would create them; changelogs co-partitioned
        with their source (the worker finds them in place and checks them)."""
        for topic in self.app.topics.values():
            self.broker.create_topic(topic.name, topic.partitions or 1)
        manager = TableManager(self.app, {}, self.backend, state_dir=Path(self.settings.state_dir))
        sources = {t.name: t.partitions or 1 for a in self.app.agents for t in a.topics}
        for spec in manager.changelog_specs(sources):
            self.broker.create_topic(spec.name, spec.partitions or 1)

    def _watch_late(self) -> None:
        """Record the late events of every windowed table (:meth:`late_events`); the table's
        own ``on_late`` still runs, and is put back on stop."""
        for name, table in self.app.tables.items():
            windowed = table.windowed
            if windowed is None:
                continue
            seen = self._late.setdefault(name, [])
            original = windowed.on_late

            def record(event: Event, seen: list[Event] = seen, original: Any = original) -> Any:
                seen.append(event)
                return original(event) if original is not None else None

            self._late_restore.append((windowed, original))
            windowed.on_late = record

    async def _wait_joined(self) -> None:
        consumer = self._consumer()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while consumer is None or consumer.turns == 0:
            self._check_running()
            if time.monotonic() > deadline:
                raise StreamerError("the worker did not start within the settle timeout")
            await asyncio.sleep(0.001)
            consumer = self._consumer()

    def _consumer(self) -> MemoryConsumer | None:
        consumer = getattr(self._worker, "_consumer", None)
        consumer = getattr(consumer, "inner", consumer)  # through the event-time ordering
        return consumer if isinstance(consumer, MemoryConsumer) else None

    def _check_running(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # raises what stopped it
            raise StreamerError("the worker stopped")

    # -- input -------------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        *,
        key: Any = None,
        value: Any = None,
        headers: Headers | None = None,
        timestamp: float | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce one record to ``topic`` (a declared topic's name), encoded with its
        serdes: a key or value that would fail serialization raises SerializationError here.
        ``timestamp`` is epoch seconds (default: the simulated clock's time); the partition
        is murmur2 of the key bytes unless given."""
        declared = self.app.topics.get(topic)
        if declared is None:
            raise ConfigError(f"topic {topic!r} is not declared by app {self.app.id!r}")
        key_bytes, value_bytes = declared.encode_key(key), declared.encode_value(value)
        self._append(topic, key_bytes, value_bytes, headers, timestamp, partition)
        await asyncio.sleep(0)

    async def send_raw(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Headers | None = None,
        *,
        timestamp: float | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce one record of raw bytes to ``topic``, bypassing its serdes: how a record
        another producer wrote (malformed JSON, a wrong schema) reaches the app, so its
        dead-letter path can be tested. ``topic`` is any topic of the app (declared, a
        changelog, a repartition or dead-letter topic); timestamp and partition as
        :meth:`send`."""
        if topic not in self.broker.topics:
            raise ConfigError(
                f"topic {topic!r} is not a topic of app {self.app.id!r}; its topics: "
                f"{', '.join(sorted(self.broker.topics))}"
            )
        self._append(topic, key, value, headers, timestamp, partition)
        await asyncio.sleep(0)

    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp: float | None,
        partition: int | None,
    ) -> None:
        ts = to_millis(self.clock.time() if timestamp is None else timestamp)
        with self.broker.lock:
            where = self.broker.partition_of(topic, key, -1 if partition is None else partition)
            self.broker.append(topic, where, Record(key, value, headers, ts, -1))

    def set_table(self, name: str, content: dict[Any, Any]) -> None:
        """Pre-fill table ``name`` before :meth:`start`: the entries are written to its
        changelog, so the worker restores them exactly as after a restart."""
        if self._task is not None:
            raise StreamerError("set_table() must be called before the driver starts")
        table = self.app.tables.get(name)
        if table is None:
            raise ConfigError(f"app {self.app.id!r} declares no table {name!r}")
        if table.windowed is not None:
            raise ConfigError(f"table {name!r} is windowed: windows fill only from events")
        self._prefill.setdefault(name, {}).update(content)

    def _write_changelog(self, name: str, content: dict[Any, Any]) -> None:
        table = self.app.tables[name]
        partitions = len(self.broker.topics[table.changelog])
        now = to_millis(self.clock.time())
        for key, value in content.items():
            data = table._key(key)
            encoded = table.value_serde.serialize(value)
            where = partition_for(data, partitions)
            self.broker.append(table.changelog, where, Record(data, encoded, None, now, -1))

    # -- progress ----------------------------------------------------------------------------

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Return when every record of every topic the worker reads is processed and its
        offset committed (outputs that feed the app's own agents included), and every
        global table holds its topic to the end.

        Commits are asked for here rather than by moving simulated time (which would also
        fire timers and close windows): the pump's own checkpoint, called between its turns.
        """
        worker = self._worker
        assert worker is not None, "start the driver first"
        deadline = time.monotonic() + timeout
        while True:
            self._check_running()
            behind = self._behind()
            if not behind:
                return
            if time.monotonic() > deadline:
                raise StreamerError(
                    f"not settled within {timeout:.0f}s: uncommitted {', '.join(behind)} "
                    "(an agent stuck, or an error policy retrying)"
                )
            consumer = self._consumer()
            turns = consumer.turns if consumer is not None else 0
            while consumer is not None and consumer.turns < turns + 2:
                self._check_running()  # let the pump run two whole turns
                await asyncio.sleep(0.0005)
            if not any(
                state.inflight and not _waiting_until_due(state, self.clock.time())
                for state in worker._states.values()
            ):
                # The checkpoint the pump runs every commit interval, run now instead.
                worker._commit()

    def _behind(self) -> list[str]:
        group = self.settings.group_id or self.app.id
        out = []
        with self.broker.lock:
            for topic in sorted({t.name for a in self.app.agents for t in a.topics}):
                for p in range(len(self.broker.topics.get(topic, []))):
                    end = self.broker.data_end(topic, p)
                    if self.broker.committed.get((group, topic, p), 0) < end:
                        state = self._worker._states.get((topic, p)) if self._worker else None
                        if state is None or not _waiting_until_due(state, self.clock.time()):
                            out.append(f"{topic}[{p}]")
            for table in self.app.global_tables.values():  # restored, then followed
                for p in range(len(self.broker.topics.get(table.topic, []))):
                    store = table.stores.get(p) if table.restored else None
                    at = store.meta_offset(CHANGELOG_OFFSET) if store is not None else None
                    if at is None or at < self.broker.data_end(table.topic, p):
                        out.append(f"global table {table.name}[{p}]")
        return out

    async def advance(self, seconds: float) -> None:
        """Process what was sent so far (as :meth:`settle`), then move simulated time forward
        by ``seconds``: timers due in the span fire (each at its time), tables tick (windows
        of idle partitions close), and what that produces is processed; returns settled.

        Settling first means ``send(...)`` then ``advance(60)`` sees the sent records in
        their windows before time moves, as it would on a broker where they arrived first."""
        await self.settle()
        await self.clock.advance(seconds)
        consumer = self._consumer()
        if consumer is not None:
            turns = consumer.turns
            while consumer.turns < turns + 2:  # a pump turn at the new time: tables ticked
                self._check_running()
                await asyncio.sleep(0.0005)
        await self.settle()

    # -- output ------------------------------------------------------------------------------

    def records(self, topic: str) -> list[tuple[Any, Any]]:
        """(key, value) of every record ``topic`` holds, decoded with its serdes (bytes for
        a topic the app does not declare, such as a dead-letter topic), in production order
        (so each partition's order is kept)."""
        declared = self.app.topics.get(topic)
        out = []
        for _, record in self.broker.records(topic):
            if declared is None:
                out.append((record.key, record.value))
            else:
                out.append((declared.decode_key(record.key), declared.decode_value(record.value)))
        return out

    def raw(self, topic: str) -> list[Record]:
        """The stored records of ``topic`` (bytes, headers, timestamp ms, offset)."""
        return [record for _, record in self.broker.records(topic)]

    def late_events(self, table: str) -> list[Event]:
        """The events windowed table ``table`` found late (no open window left for their
        event time), in the order they came, since the driver started. Their count is the
        table's ``late_events``; its own ``on_late`` saw them too."""
        declared = self.app.tables.get(table)
        if declared is None:
            raise ConfigError(f"app {self.app.id!r} declares no table {table!r}")
        if declared.windowed is None:
            raise ConfigError(f"table {table!r} is not windowed: no event is late for it")
        return list(self._late.get(table, []))

    def table(self, name: str) -> dict[Any, Any]:
        """The content of table ``name`` over every partition (windowed: keyed by
        ``(key, window start)``)."""
        table = self.app.tables.get(name)
        if table is None:
            raise ConfigError(f"app {self.app.id!r} declares no table {name!r}")
        if table.windowed is not None:
            return table.windowed.as_dict()
        return table.as_dict()


def _waiting_until_due(state: PartitionState, now: float) -> bool:
    """A partition whose lanes only hold delayed records not yet due (or are idle) is as
    settled as it can be until simulated time moves. A lane whose record is due but has
    not run yet is not."""
    if not state.holding:
        return False
    return all(
        not lane.current and (not lane.buffer if lane.due_at is None else lane.due_at > now)
        for lane in state.lanes
    )


__all__ = ["TestDriver"]
