"""A windowed stream-stream join: pair each payment with the refunds of the same account
stamped within an hour of it, and flag accounts refunded soon after paying.

Run it:  streamer worker apps.refunds
Feed it: streamer send demo-payments --app apps.refunds --key acct1 \
             --value '{"id": "p1", "amount": 40}'
         streamer send demo-refunds --app apps.refunds --key acct1 \
             --value '{"id": "r1", "amount": 40}'
Read it: the pairs arrive on demo-paid-and-refunded; the flags on demo-refund-flags.

Payments and refunds are keyed by account and have 4 partitions each: co-partitioned.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")

app = streamer.App(f"{PREFIX}-refunds", commit_interval=0.5)
payments = app.topic(f"{PREFIX}-payments", key_type=str, value_type=dict, partitions=4)
refunds = app.topic(f"{PREFIX}-refunds", key_type=str, value_type=dict, partitions=4)
pairs = app.topic(f"{PREFIX}-paid-and-refunded", key_type=str, value_type=dict, partitions=4)
flags = app.topic(f"{PREFIX}-refund-flags", key_type=str, value_type=dict, partitions=4)

app.join(
    payments,
    refunds,
    within=3600,  # paired when stamped at most an hour apart, either way round
    grace=300,  # records up to 5 minutes out of order still join
    sink=pairs,
    joiner=lambda payment, refund: {"payment": payment, "refund": refund},
)


@app.agent(pairs, sink=[flags])
async def flag(stream: streamer.Stream) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A refund of the whole amount of a payment: worth a look."""
    async for event in stream:
        payment, refund = event.value["payment"], event.value["refund"]
        if refund["amount"] >= payment["amount"]:
            yield event.key, {"payment": payment["id"], "refund": refund["id"]}
