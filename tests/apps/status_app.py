"""A test app for `streamer status`: one agent reading TEST_SRC in group TEST_APP_ID, taking
TEST_DELAY seconds per event (so a running worker has a visible backlog).

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_PARTITIONS, TEST_DELAY; the usual
STREAMER_* settings (STREAMER_BROKERS) apply.
"""

from __future__ import annotations

import asyncio
import os

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.2)
source = app.topic(
    os.environ["TEST_SRC"],
    key_type=str,
    value_type=str,
    partitions=int(os.environ.get("TEST_PARTITIONS", "1")),
)
delay = float(os.environ.get("TEST_DELAY", "0"))


@app.agent(source)
async def work(stream: streamer.Stream) -> None:
    async for _event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
