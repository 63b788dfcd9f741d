"""The lane of a table built from a topic (``app.table_from``): records applied on dispatch.

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

from streamer.state.versioned import VersionedTable
from streamer.worker.lanes import Lane
from streamer.worker.partition import PartitionState, Pending

log = logging.getLogger("streamer.tables")


class InlineLane(Lane):
    """Applies each record of its partition to ``agent.table`` when pushed (see the module
    docstring); its agent instance only waits for the lane to close."""

    __slots__ = ()

    def push(self, pending: Pending) -> None:
        if self.state.ready.is_set():
            self._apply(pending)
        else:
            self.buffer.append(pending)

    async def next_event(self) -> object:  # type: ignore[override]
        while True:  # nothing is ever handed out: _wait raises once the lane closes
            await self._wait()

    def drain(self) -> None:
        """Apply the records that arrived while the table partition was restoring."""
        buffer = self.buffer
        while buffer and not self.closing:
            self._apply(buffer.popleft())

    def _apply(self, pending: Pending) -> None:
        table = self.agent.table
        assert isinstance(table, VersionedTable)
        self._taken(1)
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


def drain_inline(state: PartitionState) -> None:
    """Apply what ``state``'s inline lanes hold (its tables were just restored)."""
    for lanes in state.routes:
        for lane in lanes:
            if isinstance(lane, InlineLane):
                lane.drain()


def lane_class(agent_table: object) -> type[Lane]:
    """The lane class of an agent: :class:`InlineLane` for a table's loader."""
    return InlineLane if agent_table is not None else Lane
