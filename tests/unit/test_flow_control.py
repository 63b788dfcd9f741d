"""Flow control: when a partition pauses, and that it resumes and loses nothing (the worker
over the in-memory broker; what is asserted is the worker's own bookkeeping)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from streamer import App, Stream
from streamer.testing import TestDriver
from streamer.worker.partition import PartitionState
from tests.kafkatools import wait_until_async

RECORDS = 3_000
CONSUME_BATCH = 400
LANE_BUFFER = 100


def test_a_consume_batch_over_the_lane_buffer_pauses_only_past_two_batches() -> None:
    """One consume() may hand a partition ``consume_batch`` records: a partition must not
    pause after every call because that is more than ``lane_buffer`` (pausing drops what
    the client prefetched, and a fast agent then waits for it to be fetched again). It
    pauses once its lanes hold two consume batches, resumes when they drained, and every
    record comes out once."""
    app = App("flow", brokers="memory", consume_batch=CONSUME_BATCH, lane_buffer=LANE_BUFFER)
    source = app.topic("flow-in", key_type=str, value_type=str, partitions=1)
    sink = app.topic("flow-out", key_type=str, value_type=str, partitions=1)
    gate = asyncio.Event()
    paused_with: list[int] = []

    @app.agent(source, sink=[sink])
    async def slow(stream: Stream) -> AsyncIterator[str]:
        async for event in stream:
            await gate.wait()
            yield event.value

    async def scenario(driver: TestDriver) -> list[tuple[str, str]]:
        for i in range(RECORDS):
            driver._append("flow-in", b"k", b"v%d" % i, None, None, 0)
        worker = driver._worker
        assert worker is not None

        def state() -> PartitionState | None:
            return worker._states.get(("flow-in", 0))

        def paused() -> bool:
            current = state()
            return current is not None and current.paused

        await wait_until_async(paused, "the partition never paused", task=driver._task)
        current = state()
        assert current is not None
        paused_with.append(current.buffered)
        gate.set()
        await wait_until_async(
            lambda: len(driver.records("flow-out")) == RECORDS,
            "not every output came out",
            task=driver._task,
        )
        await wait_until_async(lambda: not paused(), "never resumed", task=driver._task)
        return driver.records("flow-out")

    outputs = TestDriver.run(app, scenario)

    # Paused past two consume batches (the agent took one record and waits on it), not
    # after the first batch of 400 that is more than the lane buffer of 100.
    assert paused_with[0] >= 2 * CONSUME_BATCH
    assert [value for _, value in outputs] == [f"v{i}" for i in range(RECORDS)]
