"""A test app with timers: every 0.3 s each worker sends a tick; an on_leader timer sends a
leader tick; a failing timer keeps failing without harm. Env: TEST_APP_ID, TEST_SRC,
TEST_TICKS, TEST_INSTANCE (carried in the ticks), STREAMER_*.
"""

from __future__ import annotations

import os
import time

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.2)
source = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=str, partitions=4)
ticks = app.topic(os.environ["TEST_TICKS"], key_type=str, value_type=dict, partitions=1)
me = os.environ["TEST_INSTANCE"]


@app.agent(source)
async def idle(stream: streamer.Stream) -> None:
    async for _ in stream:
        pass


@app.timer(0.3)
async def tick() -> None:
    await ticks.send(key="tick", value={"worker": me, "at": time.time()})


@app.timer(0.3, on_leader=True)
async def leader_tick() -> None:
    await ticks.send(key="leader", value={"worker": me, "at": time.time()})


@app.timer(0.5)
async def broken() -> None:
    raise RuntimeError("this timer always fails")
