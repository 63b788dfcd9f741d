"""A test app for windowed tables in worker processes: counts events per key in tumbling
windows (or TEST_KIND "sliding" windows of TEST_SIZE, or "session" windows with a gap of
TEST_SIZE); every window close is sent to an output topic (from inside the event that closed
it, or from the idle tick).

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT, TEST_PARTITIONS, TEST_DELAY,
TEST_SIZE, TEST_GRACE, TEST_RETENTION, TEST_IDLE_CLOSE ("none": close by event time only),
TEST_FINALS (a topic for the final values of windows), TEST_SUSPEND (seconds the close
callback awaits before it sends: real I/O, as a user's HTTP call would), TEST_GUARANTEE
(exactly_once by default), and the usual STREAMER_* settings.
"""

from __future__ import annotations

import asyncio
import json
import os

import streamer

env = os.environ
app = streamer.App(
    env["TEST_APP_ID"], processing_guarantee=env.get("TEST_GUARANTEE", "exactly_once")
)
partitions = int(env.get("TEST_PARTITIONS", "1"))
source = app.topic(env["TEST_SRC"], key_type=str, value_type=str, partitions=partitions)
closed = app.topic(env["TEST_OUT"], key_type=str, value_type=str)
delay = float(env.get("TEST_DELAY", "0"))
suspend = float(env.get("TEST_SUSPEND", "0"))
idle = env.get("TEST_IDLE_CLOSE", "4")  # "none": windows close only by event time


async def emit(key: str, start: float, end: float, value: int) -> None:
    if suspend:
        await asyncio.sleep(suspend)  # a suspending call (as HTTP would): pacing
    await closed.send(key=key, value=json.dumps({"start": start, "end": end, "value": value}))


kind = env.get("TEST_KIND", "tumbling")
counts = getattr(app.table("counts", default=int, value_type=int), kind)(
    float(env.get("TEST_SIZE", "5")),
    grace=float(env.get("TEST_GRACE", "1")),
    retention=float(env.get("TEST_RETENTION", "3")),
    idle_close=None if idle == "none" else float(idle),
    on_close=emit,
)

if env.get("TEST_FINALS"):  # each closed window also as a record of this topic (emit-final)
    counts.stream_to(app.topic(env["TEST_FINALS"], key_type=str, value_type=dict), final=True)


@app.agent(source)
async def count(stream: streamer.Stream) -> None:
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        counts[event.key] += 1
