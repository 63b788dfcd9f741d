"""A test app for request-reply: answers each request with its value times two.

Configured by environment: TEST_APP_ID, TEST_REQUESTS, TEST_PARTITIONS, TEST_GUARANTEE,
TEST_DELAY (seconds each request takes) and STREAMER_* settings.
"""

from __future__ import annotations

import asyncio
import os

import streamer

partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
app = streamer.App(
    os.environ["TEST_APP_ID"],
    processing_guarantee=os.environ.get("TEST_GUARANTEE", "at_least_once"),
)
requests = app.topic(
    os.environ["TEST_REQUESTS"], key_type=str, value_type=int, partitions=partitions
)
delay = float(os.environ.get("TEST_DELAY", "0"))


@app.agent(requests, reply_type=int, concurrency=2)
async def double(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        yield streamer.Reply(event.value * 2)
