"""A test app for `streamer tables`: counts events per key of TEST_SRC in a ``counts`` table.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_PARTITIONS, and STREAMER_STATE_DIR
(where the tables' local state lives). It declares the same table as the counting app of
tests/integration/test_tables_cli.py, so the CLI reads that app's state.
"""

from __future__ import annotations

import os

import streamer

app = streamer.App(os.environ["TEST_APP_ID"], commit_interval=0.5)
source = app.topic(
    os.environ["TEST_SRC"],
    key_type=str,
    value_type=str,
    partitions=int(os.environ.get("TEST_PARTITIONS", "1")),
)
counts = app.table("counts", default=int, value_type=int)


@app.agent(source, concurrency=2)
async def count(stream: streamer.Stream) -> None:
    async for event in stream:
        counts[event.key] += 1
