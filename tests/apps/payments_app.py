"""A test app as a user would write it: payments re-keyed by merchant (group_by), counted in
tumbling windows of event time (the payment's own ``ts``), each closed window sent out.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT, TEST_PARTITIONS, TEST_SIZE,
TEST_GRACE (seconds), TEST_GUARANTEE (exactly_once by default), and STREAMER_* settings.
"""

from __future__ import annotations

import json
import os

import streamer

env = os.environ
app = streamer.App(
    env["TEST_APP_ID"], processing_guarantee=env.get("TEST_GUARANTEE", "exactly_once")
)
payments = app.topic(
    env["TEST_SRC"], key_type=str, value_type=dict, partitions=int(env["TEST_PARTITIONS"])
)
closed = app.topic(env["TEST_OUT"], key_type=str, value_type=str)
by_merchant = app.group_by(payments, lambda event: event.value["m"], name="by-merchant")


async def emit(merchant: str, start: float, end: float, count: int) -> None:
    await closed.send(key=merchant, value=json.dumps({"start": start, "count": count}))


counts = app.table("counts", default=int, value_type=int).tumbling(
    float(env.get("TEST_SIZE", "2")),
    grace=float(env.get("TEST_GRACE", "1")),
    retention=3600,
    idle_close=None,
    on_close=emit,
    event_time=lambda event: float(event.value["ts"]),
)


@app.agent(by_merchant)
async def count(stream: streamer.Stream) -> None:
    async for event in stream:
        counts[event.key] += 1
