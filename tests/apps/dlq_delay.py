"""A test app for `streamer dlq replay --delay`: value 13 fails (dead-lettered at once)
until ``FIXED["on"]`` is set. Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT,
STREAMER_BROKERS."""

from __future__ import annotations

import os

import streamer

FIXED = {"on": False}

app = streamer.App(
    os.environ["TEST_APP_ID"],
    commit_interval=0.2,
    delayed_delivery=True,
    on_error=streamer.ErrorPolicy(retries=0),
)
source = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=int, partitions=2)
out = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=int, partitions=2)


@app.agent(source, sink=[out])
async def accept(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        if event.value == 13 and not FIXED["on"]:
            raise RuntimeError("unlucky")
        yield event.value
