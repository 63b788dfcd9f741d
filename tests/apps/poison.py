"""A test app for failure handling: orders validated by a model; amount 13 makes the agent
raise until ``FIXED["on"]`` is set (the "fix" a dead-letter replay follows).

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT, STREAMER_BROKERS.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

import streamer


class Order(BaseModel):
    id: str
    amount: float


FIXED = {"on": False}

app = streamer.App(
    os.environ["TEST_APP_ID"],
    commit_interval=0.2,
    on_error=streamer.ErrorPolicy(retries=2, backoff=0.01),
)
orders = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=Order, partitions=2)
accepted = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=str, partitions=2)


@app.agent(orders, sink=[accepted], concurrency=2)
async def accept(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        order: Order = event.value
        if order.amount == 13 and not FIXED["on"]:
            raise RuntimeError(f"unlucky order {order.id}")
        yield order.id
