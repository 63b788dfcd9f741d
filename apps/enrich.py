"""Joins: enrich orders with their customer (a stream-table join on a co-partitioned table
built from the customers topic) and their product (a lookup by foreign key in a global
table).

Run it:  streamer worker apps.enrich
Feed it: streamer send demo-customers --app apps.enrich --key ann --value '{"tier": "gold"}'
         streamer send demo-products --app apps.enrich --key p1 \
             --value '{"title": "Mug", "price": 9.5}'
         streamer send demo-shop-orders --app apps.enrich --key ann \
             --value '{"id": "o1", "product": "p1", "qty": 2}'
Read it: the enriched orders arrive on demo-enriched-orders.

Orders are keyed by customer, like the customers topic, and both have 4 partitions: they
are co-partitioned, so the worker that owns orders partition p owns customers partition p.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")

app = streamer.App(f"{PREFIX}-enrich", commit_interval=0.5)
customers_topic = app.topic(f"{PREFIX}-customers", key_type=str, value_type=dict, partitions=4)
orders = app.topic(f"{PREFIX}-shop-orders", key_type=str, value_type=dict, partitions=4)
enriched = app.topic(f"{PREFIX}-enriched-orders", key_type=str, value_type=dict, partitions=4)

# Co-partitioned with the orders: read as of each order's timestamp.
customers = app.table_from(customers_topic)
# Every worker holds every product: looked up by the order's product id.
products = app.global_table(f"{PREFIX}-products", value_type=dict)


@app.agent(orders, sink=[enriched], concurrency=2)
async def enrich(stream: streamer.Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Each order with the customer in effect when it was placed and its product now."""
    async for event in stream:
        order = event.value
        product = products.get(order["product"]) or {}
        yield (
            event.key,
            {
                **order,
                "customer": customers.get(event.key),
                "title": product.get("title"),
                "total": product.get("price", 0.0) * order.get("qty", 1),
            },
        )
