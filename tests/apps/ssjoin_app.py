"""A test app for windowed stream-stream joins under exactly-once: payments and refunds of
one account stamped at most TEST_WITHIN seconds apart are paired.

Configured by environment: TEST_APP_ID, TEST_LEFT, TEST_RIGHT, TEST_OUT, TEST_PARTITIONS,
TEST_WITHIN, TEST_GRACE and STREAMER_* settings.
"""

from __future__ import annotations

import os

import streamer

partitions = int(os.environ.get("TEST_PARTITIONS", "1"))
app = streamer.App(os.environ["TEST_APP_ID"], processing_guarantee="exactly_once",
                   commit_interval=0.5)  # fmt: skip
left = app.topic(os.environ["TEST_LEFT"], key_type=str, value_type=str, partitions=partitions)
right = app.topic(os.environ["TEST_RIGHT"], key_type=str, value_type=str, partitions=partitions)
out = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=dict, partitions=partitions)
join = app.join(left, right, within=float(os.environ.get("TEST_WITHIN", "60")),
                grace=float(os.environ.get("TEST_GRACE", "600")), sink=out,
                joiner=lambda payment, refund: {"payment": payment, "refund": refund})  # fmt: skip
