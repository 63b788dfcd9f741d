"""A test app for `streamer offsets`: one agent reading TEST_SRC, in group TEST_APP_ID.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_PARTITIONS, and TEST_TABLE=1 to
declare a ``counts`` table (so the reset's state handling has something to delete); the
usual STREAMER_* settings (STREAMER_BROKERS, STREAMER_STATE_DIR) apply.
"""

from __future__ import annotations

import os

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.5)
source = app.topic(
    os.environ["TEST_SRC"],
    key_type=str,
    value_type=str,
    partitions=int(os.environ.get("TEST_PARTITIONS", "1")),
)
counts = app.table("counts", default=int, value_type=int) if os.environ.get("TEST_TABLE") else None


@app.agent(source)
async def consume(stream: streamer.Stream) -> None:
    async for event in stream:
        if counts is not None:
            counts[event.key] += 1
