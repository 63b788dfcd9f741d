"""A test app for delayed delivery: only the delay topic's release agent runs here.

Configured by environment: TEST_APP_ID, TEST_DEST, TEST_GUARANTEE and STREAMER_* settings.
"""

from __future__ import annotations

import os

import streamer

app = streamer.App(
    os.environ["TEST_APP_ID"],
    processing_guarantee=os.environ.get("TEST_GUARANTEE", "at_least_once"),
    delayed_delivery=True,
)
destination = app.topic(os.environ["TEST_DEST"], key_type=str, value_type=int, partitions=3)
