"""`streamer tables` on the state a real worker wrote: the listing and `get`, run as a user runs
them (a subprocess), both while the worker holds its stores and after it stopped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer import App, Stream
from streamer.worker import Worker
from tests.kafkatools import ROOT, all_committed, produce, wait_until_async

APP = "tests.apps.table_app"
PARTITIONS = 3
KEYS = 200
EVENTS = 5_000


def _counting_app(bootstrap: str, app_id: str, src: str, state_dir: Path) -> tuple[App, list[int]]:
    """The same app as tests/apps/table_app.py, in-process so the test sees its progress."""
    app = App(app_id, brokers=bootstrap, state_dir=state_dir, commit_interval=0.5)
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    counts = app.table("counts", default=int, value_type=int)
    processed = [0]

    @app.agent(source, concurrency=2)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1
            processed[0] += 1

    return app, processed


def _cli_runner(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer", "tables", APP, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
            env={**os.environ, **env},
        )

    return run


async def _run_and_list_while_running(
    app: App,
    processed: list[int],
    cli: Callable[..., subprocess.CompletedProcess[str]],
    done: Callable[[], bool],
) -> subprocess.CompletedProcess[str]:
    """Run a worker until every event is counted and ``done()`` (its input committed), list
    the tables while it still holds its stores, then stop it cleanly."""
    worker = Worker(app, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until_async(
            lambda: processed[0] >= EVENTS,
            lambda: f"only {processed[0]} of {EVENTS} counted",
            task=task,
        )
        # Committed up to the end: the checkpoint that wrote the counts to the stores.
        await wait_until_async(done, "counts never committed", task=task)
        return await asyncio.to_thread(cli, "--json")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def test_tables_lists_partitions_and_gets_values(
    kafka_bootstrap: str, create_topic: Any, unique_name: Any, tmp_path: Path
) -> None:
    src = create_topic("tables-src", partitions=PARTITIONS)
    app_id = unique_name("tables-app")
    produce(kafka_bootstrap, src, ((f"key-{i % KEYS}".encode(), b"1") for i in range(EVENTS)))
    app, processed = _counting_app(kafka_bootstrap, app_id, src, tmp_path)
    cli = _cli_runner(
        {
            "STREAMER_BROKERS": kafka_bootstrap,
            "STREAMER_STATE_DIR": str(tmp_path),
            "TEST_APP_ID": app_id,
            "TEST_SRC": src,
            "TEST_PARTITIONS": str(PARTITIONS),
        }
    )

    live = asyncio.run(
        _run_and_list_while_running(
            app, processed, cli, all_committed(kafka_bootstrap, app.group_id, src, PARTITIONS)
        )
    )
    assert live.returncode == 0, live.stderr
    (live_table,) = json.loads(live.stdout)
    assert all(p["error"] is None for p in live_table["partitions"]), live_table
    assert sum(p["keys"] for p in live_table["partitions"]) == KEYS

    # After a clean stop: every partition is local, and the keys add up to the distinct keys.
    listing = cli("--json")
    assert listing.returncode == 0, listing.stderr
    (table,) = json.loads(listing.stdout)
    assert table["table"] == "counts" and table["changelog"] == f"{app_id}-counts-changelog"
    parts = table["partitions"]
    assert [p["partition"] for p in parts] == list(range(PARTITIONS))
    assert sum(p["keys"] for p in parts) == KEYS
    assert all(p["changelog_offset"] and p["disk_bytes"] > 0 for p in parts), parts

    text = cli()
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines()]
    assert rows[1][:4] == ["table", "partition", "keys", "size"]
    assert sum(int(row[2]) for row in rows[2:]) == KEYS

    # get: the count of one key, as text and as JSON.
    got = cli("get", "counts", "key-7")
    assert (got.returncode, got.stdout) == (0, f"{EVENTS // KEYS}\n"), got.stderr
    as_json = json.loads(cli("get", "counts", "key-7", "--json").stdout)
    assert as_json["value"] == EVENTS // KEYS and as_json["partition"] in range(PARTITIONS)

    # Mistakes: one line each, exit 1 (a malformed command line is a usage error, exit 2).
    missing = cli("get", "counts", "no-such-key")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (
        "error: key 'no-such-key' not found in table 'counts' (partitions searched: 0, 1, 2)"
    )
    unknown = cli("get", "nope", "key-7")
    assert unknown.returncode == 1
    assert (
        unknown.stderr.strip() == f"error: app '{app_id}' has no table 'nope'; its tables: counts"
    )
    assert cli("frobnicate").returncode == 2
