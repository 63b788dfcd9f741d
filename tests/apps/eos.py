"""A test app for exactly-once: echoes every record and keeps and emits a per-key sum.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_ECHO, TEST_SUMS, TEST_PARTITIONS,
TEST_DELAY, TEST_BOOM_DIR (see below) and STREAMER_* settings.

With TEST_BOOM_DIR set, the first time a record with value -1 is seen (a marker file in
that directory records it) the agent also sends a record too large for the `-big` topic: the
broker refuses it, so the whole transaction aborts — a real abortable failure.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import streamer

partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
app = streamer.App(os.environ["TEST_APP_ID"], processing_guarantee="exactly_once")
source = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=int, partitions=partitions)
echo_topic = app.topic(os.environ["TEST_ECHO"], key_type=str, value_type=int, partitions=partitions)
sums_topic = app.topic(os.environ["TEST_SUMS"], key_type=str, value_type=int, partitions=partitions)
# The broker refuses records over 10 kB on this topic.
oversized = app.topic(
    os.environ["TEST_ECHO"] + "-big",
    key_type=str,
    value_type=bytes,
    config={"max.message.bytes": "10000"},
)
sums = app.table("sums", default=int, value_type=int)
delay = float(os.environ.get("TEST_DELAY", "0"))
boom_dir = os.environ.get("TEST_BOOM_DIR")


@app.agent(source, sink=[echo_topic], concurrency=2)
async def process(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        sums[event.key] += event.value
        await sums_topic.send(key=event.key, value=sums[event.key])
        yield event.value
        if event.value == -1 and boom_dir and not (Path(boom_dir) / "boomed").exists():
            # Still this event (it completes at the next iteration), after its echo and sum:
            # those are queued first, so they reach the log in the transaction that aborts
            # (what the producer still holds when the refusal comes back is purged).
            (Path(boom_dir) / "boomed").touch()
            await oversized.send(key=event.key, value=b"x" * 200_000)
