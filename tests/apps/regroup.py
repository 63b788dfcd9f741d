"""A test app for worker processes: re-keys events by user (a repartition topic), counts them
per user in a table and emits every new count, exactly once.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT, TEST_PARTITIONS, and STREAMER_*
settings. TEST_FAULT chooses a fault plan (``streamer.testing.faults``) for the worker's
clients: ``restore-fatal`` makes every changelog read of a restore fail with an error that
is not transient.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from confluent_kafka import KafkaError

import streamer
from streamer.kafka.backend import ConfluentBackend
from streamer.testing.faults import ConsumeFailure, FaultyBackend

partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
app = streamer.App(os.environ["TEST_APP_ID"], processing_guarantee="exactly_once")
events = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=dict, partitions=partitions)
by_user = events.group_by(lambda event: event.value["user"], name="by-user")
out = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=int, partitions=partitions)
counts = app.table("counts", default=int, value_type=int)

if os.environ.get("TEST_FAULT") == "restore-fatal":
    app.backend = FaultyBackend(
        ConfluentBackend(),
        ConsumeFailure("streamer-restore-", code=KafkaError.TOPIC_AUTHORIZATION_FAILED, times=None),
    )


@app.agent(by_user, sink=[out], concurrency=2)
async def count(stream: streamer.Stream) -> AsyncIterator[tuple[str, int]]:
    async for event in stream:
        counts[event.key] += 1
        yield event.key, counts[event.key]
