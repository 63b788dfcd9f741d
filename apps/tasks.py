"""Tasks: the patterns of a task queue, on streams.

- ``quote``: request-reply. ``await quote.ask(key=customer, value=items, timeout=5)``
  returns the price the agent replies with (``yield streamer.Reply(total)``).
- ``notify``: sends emails (here: records on ``emails``) at most 20 a second in all, and 2
  a second per customer; a failed send goes to retry topics (30 s, then 5 min) instead of
  holding up that customer's later emails.
- ``signup``: welcomes a new customer at once and sends a reminder a day later
  (``send(..., delay=timedelta(days=1))``), through the app's delay topic.

Run it: streamer worker apps.tasks
Ask it (while it runs): python -m apps.tasks quote alice 3 4.5
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")

app = streamer.App(f"{PREFIX}-tasks", commit_interval=0.5, delayed_delivery=True)
quotes = app.topic(f"{PREFIX}-quotes", key_type=str, value_type=list, partitions=3)
notifications = app.topic(f"{PREFIX}-notifications", key_type=str, value_type=str, partitions=3)
signups = app.topic(f"{PREFIX}-signups", key_type=str, value_type=str, partitions=3)
emails = app.topic(f"{PREFIX}-emails", key_type=str, value_type=str, partitions=3)

OUTBOX_DOWN = {"on": False}  # tests flip it to make sends fail


@app.agent(quotes, reply_type=float, concurrency=4)
async def quote(stream: streamer.Stream) -> AsyncIterator[streamer.Reply]:
    """Reply with the total of the prices asked about, discounted above 100."""
    async for event in stream:
        total = float(sum(event.value))
        yield streamer.Reply(total * 0.9 if total > 100 else total)


@app.agent(
    notifications,
    sink=[emails],
    concurrency=4,
    rate_limit="20/s",
    rate_limit_per_key="2/s",
    on_error=streamer.ErrorPolicy(retry_topics=[timedelta(seconds=30), timedelta(minutes=5)]),
)
async def notify(stream: streamer.Stream) -> AsyncIterator[str]:
    """Send one email per notification (the sink stands for the mail server)."""
    async for event in stream:
        if OUTBOX_DOWN["on"]:
            raise ConnectionError("mail server unavailable")
        yield f"to {event.key}: {event.value}"


@app.agent(signups)
async def signup(stream: streamer.Stream) -> None:
    """Welcome now, remind in a day: both notifications commit with the signup."""
    async for event in stream:
        await notifications.send(key=event.key, value=f"welcome, {event.value}!")
        await notifications.send(
            key=event.key, value="how is it going so far?", delay=timedelta(days=1)
        )


async def _ask(customer: str, prices: list[float]) -> None:
    print(await quote.ask(key=customer, value=prices, timeout=10))
    app.replies.close()


if __name__ == "__main__":  # python -m apps.tasks quote CUSTOMER PRICE...
    if len(sys.argv) < 4 or sys.argv[1] != "quote":
        sys.exit("usage: python -m apps.tasks quote CUSTOMER PRICE [PRICE...]")
    asyncio.run(_ask(sys.argv[2], [float(p) for p in sys.argv[3:]]))
