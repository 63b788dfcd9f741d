"""A test app for worker processes: counts events per key in a table.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_PARTITIONS, TEST_DELAY, and the
usual STREAMER_* settings (STREAMER_STATE_DIR gives each worker its own local state).
"""

from __future__ import annotations

import asyncio
import os

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.5)
source = app.topic(
    os.environ["TEST_SRC"],
    key_type=str,
    value_type=str,
    partitions=int(os.environ.get("TEST_PARTITIONS", "1")),
)
counts = app.table("counts", default=int, value_type=int)
delay = float(os.environ.get("TEST_DELAY", "0"))


@app.agent(source, concurrency=2)
async def count(stream: streamer.Stream) -> None:
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        counts[event.key] += 1
