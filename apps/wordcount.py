"""Word count, stateless: split lines into words and send ``word -> 1`` to a sink topic.

Run it:  streamer worker apps.wordcount
Feed it: streamer send demo-lines --app apps.wordcount --key l1 --value "the quick brown fox"
Topics are namespaced with STREAMER_DEMO_PREFIX (default "demo") so demos and tests never
collide.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")

app = streamer.App(f"{PREFIX}-wordcount", commit_interval=0.5)
lines = app.topic(f"{PREFIX}-lines", key_type=str, value_type=str, partitions=4)
words = app.topic(f"{PREFIX}-words", key_type=str, value_type=int, partitions=4)


@app.agent(lines, sink=[words], concurrency=2)
async def split(stream: streamer.Stream) -> AsyncIterator[tuple[str, int]]:
    """Every word of every line, lower-cased, keyed by the word (so counts co-partition)."""
    async for event in stream:
        for word in event.value.lower().split():
            yield word.strip(".,;:!?\"'"), 1
