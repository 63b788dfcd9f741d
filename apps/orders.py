"""Orders: JSON orders validated by a pydantic model, re-published as Avro.

``orders`` (JSON, validated by :class:`Order`) -> ``orders-avro`` (Avro, schemas/order.avsc)
and, for orders of 100 or more, a note on ``large-orders``. Invalid orders are refused at
decode time with the field at fault named in the log, and the partition goes on.

Run it: streamer worker apps.orders
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")


class Order(BaseModel):
    id: str
    customer: str
    amount: float = Field(ge=0)
    note: str | None = None


app = streamer.App(f"{PREFIX}-orders", commit_interval=0.5)
orders = app.topic(f"{PREFIX}-orders", key_type=str, value_type=Order, partitions=3)
orders_avro = app.topic(
    f"{PREFIX}-orders-avro",
    key_type=str,
    value_type=streamer.avro("order", model=Order),
    partitions=3,
)
large_orders = app.topic(f"{PREFIX}-large-orders", key_type=str, value_type=dict, partitions=3)


@app.agent(orders, sink=[orders_avro], concurrency=4)
async def republish(stream: streamer.Stream) -> AsyncIterator[Order]:
    """Every valid order, keyed by customer, as Avro; large ones also flagged."""
    async for event in stream:
        order: Order = event.value
        if order.amount >= 100:
            await large_orders.send(
                key=order.customer, value={"id": order.id, "amount": order.amount}
            )
        yield order
