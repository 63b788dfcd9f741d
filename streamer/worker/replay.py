"""Replay: a worker running an app's agents over a range of a topic, outside its consumer
group: the plan it is given (made by :mod:`streamer.ops.replay`), the checkpoint it uses, the
summary it returns (running one: :mod:`streamer.worker.replaying`).

A replay reads ``[start, stop)`` of each chosen partition with its own throw-away group id,
so the app's committed offsets never move. Outputs go to the sinks (or, with ``dry_run``,
nowhere: they are handed to a callback instead). Tables are restored from their changelogs
into a temporary directory and changed only in memory: a replay never writes changelogs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.errors import KafkaOperationError
from streamer.kafka.backend import Consumer, Producer
from streamer.state.keyed import TablePartition
from streamer.worker.checkpoint import AtLeastOnceCheckpoint, CheckpointFailed, Due
from streamer.worker.partition import Effects, Output, PartitionState

log = logging.getLogger("streamer.replay")

OutputSink = Callable[[Output], None]


@dataclass(frozen=True)
class ReplayPlan:
    """What to replay: ``ranges`` maps partition -> (start, stop) offsets, stop exclusive."""

    topic: str
    ranges: dict[int, tuple[int, int]]
    agents: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(stop - start for start, stop in self.ranges.values())


@dataclass
class ReplaySummary:
    """What a replay did."""

    records: int = 0
    outputs: int = 0
    errors: int = 0
    seconds: float = 0.0
    printed: list[Output] = field(default_factory=list)


class ReplayCheckpoint(AtLeastOnceCheckpoint):
    """Flushes outputs but never commits offsets nor writes changelogs or RocksDB. With a
    ``dry_run`` sink, outputs are handed to it instead of being produced."""

    def __init__(
        self, consumer: Consumer, producer: Producer, brokers: str, *, dry_run: OutputSink | None
    ) -> None:
        super().__init__(consumer, producer, brokers)
        self._dry_run = dry_run

    def release(self, batch: list[Effects]) -> None:
        if self._dry_run is None:
            super().release(batch)
            return
        for effects in batch:
            for output in effects.outputs:
                self._dry_run(output)

    def _commit(
        self, due: Due, parts: list[TablePartition], states: list[PartitionState], deadline: float
    ) -> None:
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining or self.refusals:
            refusals = self._take_refusals()
            fatal = KafkaOperationError(
                f"replay outputs not delivered ({remaining} pending, {len(refusals)} failed"
                + (f", first: {refusals[0][1].str()})" if refusals else ")")
            )
            raise CheckpointFailed(str(fatal), refusals=refusals, fatal=fatal)
        for state, offset in due:
            state.committed = offset  # only local bookkeeping: nothing is sent to Kafka
        for part in parts:
            part.dirty.clear()  # tables stay in memory (the overlay): no changelog, no RocksDB
