"""A test app for worker processes: echoes ``key:value`` from TEST_SRC to TEST_OUT.

Configured by environment so each test gets its own topics and group: TEST_APP_ID,
TEST_SRC, TEST_OUT, TEST_PARTITIONS, TEST_DELAY (seconds per event), TEST_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import os

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.5)
partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
source = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=str, partitions=partitions)
output = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=str, partitions=partitions)
delay = float(os.environ.get("TEST_DELAY", "0"))


@app.agent(source, sink=[output], concurrency=int(os.environ.get("TEST_CONCURRENCY", "1")))
async def echo(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        yield f"{event.key}:{event.value}"
