"""A test app for non-blocking retries: value v fails while a marker file
``<TEST_MARK_DIR>/fail-<v>`` holds a positive count (decremented on each failure), so the
failures survive a kill -9; every success is echoed to TEST_OUT.

Configured by environment: TEST_APP_ID, TEST_SRC, TEST_OUT, TEST_GUARANTEE, TEST_MARK_DIR.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import streamer

app = streamer.App(
    os.environ["TEST_APP_ID"],
    processing_guarantee=os.environ.get("TEST_GUARANTEE", "at_least_once"),
    on_error=streamer.ErrorPolicy(
        retry_topics=[timedelta(seconds=2), timedelta(seconds=4)], on_exhausted="dead_letter"
    ),
)
source = app.topic(os.environ["TEST_SRC"], key_type=str, value_type=int, partitions=3)
out = app.topic(os.environ["TEST_OUT"], key_type=str, value_type=int, partitions=3)
marks = Path(os.environ["TEST_MARK_DIR"])


@app.agent(source, sink=[out], concurrency=2)
async def work(stream: streamer.Stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        mark = marks / f"fail-{event.value}"
        if mark.exists():
            left = int(mark.read_text())
            if left > 0:
                # Written aside, then renamed over the marker: a kill -9 between the two
                # leaves the old count, never an empty marker.
                aside = mark.with_name(f"{mark.name}.new")
                aside.write_text(str(left - 1))
                os.replace(aside, mark)
                raise RuntimeError(f"failing {event.value} ({left} left)")
        yield event.value
