"""The lane of a table built from a topic (``app.table_from``) or of a windowed join
(``app.join``, ``app.table_join``): records applied on dispatch.

Why not an agent instance like any other: lanes of different agents run one after the
other in whatever order the loop wakes them, so a lane applying table records could fall
behind the lane of an agent reading the table, which would then miss a version that was
dispatched before its event. Applied when dispatched (in offset order, and across the
co-partitioned topics lowest timestamp first), every earlier record of the table's
partition is in the table before a later event is processed.

Each record's write is staged with the record like any agent's (DESIGN §2 rule 2): the
record completes at once, its write joins the checkpoint in offset order, a failed
checkpoint drops it with the rest. Records dispatched while the table partition is still
restoring wait in the lane, and are applied (``drain_inline``) just before the partition's
lanes may start.
"""

from __future__ import annotations

import logging

from streamer._context import TableWrite
from streamer.errors import StreamerError
from streamer.state.stream_join import StreamJoin
from streamer.state.table_join import TableJoin
from streamer.state.versioned import VersionedTable
from streamer.worker.lanes import Lane
from streamer.worker.partition import Output, PartitionState, Pending

log = logging.getLogger("streamer.tables")


class InlineLane(Lane):
    """Applies each record of its partition to ``agent.table`` (a VersionedTable or a
    StreamJoin) when pushed (see the module docstring); its agent instance only waits for
    the lane to close."""

    __slots__ = ()
    appendable = False  # records are applied in push(): never appended past it

    def push(self, pending: Pending) -> None:
        if self.state.ready.is_set():
            self._apply(pending)
        else:
            self.buffer.append(pending)

    async def next_event(self) -> object:  # type: ignore[override]
        while True:  # nothing is ever handed out: _wait raises once the lane closes
            await self._wait()

    def _apply(self, pending: Pending) -> None:
        self._taken(1)
        target = self.agent.table
        if isinstance(target, VersionedTable):
            self._apply_version(target, pending)
        elif isinstance(target, TableJoin):
            self._apply_table_join(target, pending)
        else:
            assert isinstance(target, StreamJoin)
            self._apply_join(target, pending)

    def _apply_version(self, table: VersionedTable, pending: Pending) -> None:
        part = next((p for p in self.state.tables if p.table is table), None)
        raw = pending.event.key
        if part is None or raw is None:
            if raw is None:
                log.warning(
                    "%s: a record without a key (offset %d) cannot enter table %r; skipped",
                    self.state.label,
                    pending.offset,
                    table.name,
                )
            self.state.complete(pending)
            return
        key = table._key(raw)  # as agents' lookups encode it
        write = table.put_version(part, key, pending.message.value(), pending.event.timestamp)
        if write is not None:
            pending.effects_of(self.agent.name).writes = [write]
        else:
            log.warning(
                "%s: record at offset %d is older than table %r keeps history for; skipped",
                self.state.label,
                pending.offset,
                table.name,
            )
        self.state.complete(pending)

    def _apply_join(self, join: StreamJoin, pending: Pending) -> None:
        """Buffer the record and emit its pairs, staged with it (see state/stream_join.py).
        A joiner that raises, or a pair the sink cannot encode, stops the worker with the
        record uncommitted: a join has no agent code to retry or skip."""
        message, event = pending.message, pending.event
        key, value = message.key(), message.value()
        if key is None or value is None:  # as Kafka Streams: such records do not join
            self.state.complete(pending)
            return
        parts = {p.table: p for p in self.state.tables}
        try:
            result = join.on_record(event.topic, parts, key, value, event.value, event.timestamp)
            if result is None:
                log.warning("%s: record at offset %d is too late for join %r (stream time %d "
                            "ms); dropped", self.state.label, pending.offset, join.name,
                            join.stream_time.get(self.state.partition, 0))  # fmt: skip
                self.state.complete(pending)
                return
            writes, pairs = result
            sink = join.sink
            out_key = sink.encode_key(event.key)
            outputs: list[Output] = [
                (sink.name, out_key, sink.encode_value(join.joiner(left, right)), None)
                for left, right in pairs
            ]
        except Exception as exc:
            self._join_failed(join.name, pending, exc)
            return
        self._stage(pending, writes, outputs)

    def _apply_table_join(self, join: TableJoin, pending: Pending) -> None:
        """Apply the record to its side and the joined row, staged with it, the change sent
        to the join's sink (see state/table_join.py). Failures stop the worker, as for
        windowed joins."""
        message, event = pending.message, pending.event
        key = message.key()
        if key is None:
            self.state.complete(pending)
            return
        parts = {p.table: p for p in self.state.tables}
        try:
            row_key = join.result._key(event.key)
            writes, change = join.on_record(
                event.topic, parts, key, row_key, message.value(), event.value
            )
            outputs: list[Output] = []
            sink = join.sink
            if change is not None and sink is not None:
                kind, row = change
                value = sink.encode_value(row) if kind == "row" else None
                outputs.append((sink.name, sink.encode_key(event.key), value, None))
        except Exception as exc:
            self._join_failed(join.name, pending, exc)
            return
        self._stage(pending, writes, outputs)

    def _stage(self, pending: Pending, writes: list[TableWrite], outputs: list[Output]) -> None:
        """Stage a join's writes and outputs with its record, which is then complete."""
        effects = pending.effects_of(self.agent.name)
        effects.writes = writes
        effects.outputs = outputs
        self.state.complete(pending)

    def _join_failed(self, name: str, pending: Pending, exc: Exception) -> None:
        self.ctx.on_fatal(StreamerError(
            f"join {name!r} failed on {self.state.label} offset {pending.offset}: "
            f"{type(exc).__name__}: {exc} (the record stays uncommitted; fix and restart)"
        ))  # fmt: skip


def drain_inline(states: list[PartitionState]) -> None:
    """Apply what the inline lanes of ``states`` (one partition number's, whose tables were
    just restored) hold: lowest event time first across them, each lane in its own order,
    as the worker dispatched them (a windowed join's stream time depends on it)."""
    lanes = [
        lane
        for state in states
        for lanes in state.routes
        for lane in lanes
        if isinstance(lane, InlineLane) and lane.buffer
    ]
    while lanes:
        lane = min(lanes, key=lambda candidate: candidate.buffer[0].event.timestamp)
        if lane.closing:
            lanes.remove(lane)
            continue
        lane._apply(lane.buffer.popleft())
        if not lane.buffer:
            lanes.remove(lane)


def lane_class(agent_table: object) -> type[Lane]:
    """The lane class of an agent: :class:`InlineLane` for a table's loader."""
    return InlineLane if agent_table is not None else Lane
