"""A test app for stream-table joins under exactly-once: orders (keyed by customer) enriched
with the customer version in effect at each order's timestamp.

Configured by environment: TEST_APP_ID, TEST_CUSTOMERS, TEST_ORDERS, TEST_OUT,
TEST_PARTITIONS, TEST_DELAY (seconds each order takes) and STREAMER_* settings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import streamer

partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
app = streamer.App(os.environ["TEST_APP_ID"], processing_guarantee="exactly_once",
                   commit_interval=0.5)  # fmt: skip
customers_topic = app.topic(os.environ["TEST_CUSTOMERS"], key_type=str, value_type=str,
                            partitions=partitions)  # fmt: skip
orders = app.topic(os.environ["TEST_ORDERS"], key_type=str, value_type=str, partitions=partitions)
out = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=dict, partitions=partitions)
customers = app.table_from(customers_topic)
delay = float(os.environ.get("TEST_DELAY", "0"))


@app.agent(orders, sink=[out], concurrency=2)
async def enrich(stream: streamer.Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async for event in stream:
        if delay:
            await asyncio.sleep(delay)  # simulated work (pacing), not a wait
        yield event.key, {"order": event.value, "customer": customers.get(event.key)}
