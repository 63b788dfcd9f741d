"""Failure handling on the real broker: poison records go to the dead-letter topic with their
reason, retries keep per-key order without holding up other keys, and dead letters can be
sent back once the agent is fixed."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
import zlib
from types import ModuleType

import pytest

from streamer import AgentFailed, App, ErrorPolicy, Stream
from streamer.worker import Worker
from tests.kafkatools import ROOT, committed, produce, read_all, run_cli, run_until


def _poison_app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return importlib.reload(importlib.import_module("tests.apps.poison"))


def _headers(message: object) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or []}  # type: ignore[attr-defined]


def test_poison_records_go_to_the_dead_letter_topic_and_come_back_after_a_fix(
    kafka_bootstrap: str, create_topic, unique_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("poison"),
        "TEST_SRC": create_topic("orders", partitions=2),
        "TEST_OUT": create_topic("accepted", partitions=2),
    }
    poison = _poison_app(monkeypatch, env)
    records: list[tuple[bytes, bytes]] = []
    reasons: dict[bytes, str] = {}
    for i in range(2_000):
        key = f"o{i}".encode()
        if i % 300 == 7:  # 7 of these, 7 invalid orders and 6 unlucky ones: 1%
            value, reasons[key] = b"{not json", "SerializationError"
        elif i % 300 == 107:
            value, reasons[key] = b'{"id": "x", "amount": "lots"}', "SerializationError"
        elif i % 300 == 207:
            value, reasons[key] = f'{{"id": "o{i}", "amount": 13}}'.encode(), "RuntimeError"
        else:
            value = f'{{"id": "o{i}", "amount": {i + 0.5}}}'.encode()
        records.append((key, value))
    produce(kafka_bootstrap, env["TEST_SRC"], records)
    dlq = f"{env['TEST_APP_ID']}-accept-dlq"
    good = {k.decode() for k, _ in records if k not in reasons}

    asyncio.run(
        run_until(
            poison.app,
            lambda: len(read_all(kafka_bootstrap, dlq, expect=20, timeout=2, idle=1)) >= 20,
        )
    )
    outputs = read_all(kafka_bootstrap, env["TEST_OUT"], expect=len(good))
    assert sorted(m.value().decode() for m in outputs) == sorted(good)
    letters = read_all(kafka_bootstrap, dlq, expect=20)
    assert len(letters) == 20
    originals = dict(records)
    for letter in letters:
        headers = _headers(letter)
        key = letter.key()
        assert letter.value() == originals[key]  # the original bytes, untouched
        assert headers["streamer.error.type"] == reasons[key]
        assert headers["streamer.attempts"] == ("3" if reasons[key] == "RuntimeError" else "1")
        assert headers["streamer.source.topic"] == env["TEST_SRC"]
        assert headers["streamer.agent"] == "accept"
        source = [m for m in read_all(kafka_bootstrap, env["TEST_SRC"], expect=2_000)
                  if m.partition() == int(headers["streamer.source.partition"])
                  and m.offset() == int(headers["streamer.source.offset"])]  # fmt: skip
        assert [m.key() for m in source] == [key]
        assert headers["streamer.error.message"]
        assert "Traceback" in headers["streamer.error.traceback"]

    cli_env = {**os.environ, **env}
    shown = subprocess.run(
        [sys.executable, "-m", "streamer", "dlq", "show", "tests.apps.poison", "--json"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env, timeout=60, check=True,
    )  # fmt: skip
    (summary,) = json.loads(shown.stdout)
    assert (summary["count"], summary["replayed"]) == (20, 0)
    errors = {group["type"]: group for group in summary["errors"]}
    assert [g["type"] for g in summary["errors"]] == ["SerializationError", "RuntimeError"]
    assert errors["RuntimeError"]["count"] == 6
    assert errors["RuntimeError"]["sample"].startswith("unlucky order o")
    assert errors["SerializationError"]["count"] == 14
    by_source: dict[str, int] = {}
    for letter in letters:
        where = f"{env['TEST_SRC']}[{_headers(letter)['streamer.source.partition']}]"
        if _headers(letter)["streamer.error.type"] == "RuntimeError":
            by_source[where] = by_source.get(where, 0) + 1
    assert errors["RuntimeError"]["sources"] == dict(sorted(by_source.items()))
    assert summary["first"] <= errors["RuntimeError"]["first"] <= summary["last"]
    # As a user types it: one line per error type, most frequent first, not one per message.
    text = run_cli("dlq", "show", "tests.apps.poison", env=env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == (f"accept: 20 dead letter(s) in {dlq} (0 replayed, 20 pending)")
    assert lines[2].split() == ["count", "error", "sample", "from", "first", "last"]
    assert [line.split()[:2] for line in lines[3:]] == [
        ["14", "SerializationError"],
        ["6", "RuntimeError"],
    ]

    # The fix: amount 13 is fine now. Replaying sends the 20 back; 6 succeed, 14 fail again.
    command = ["dlq", "replay", "tests.apps.poison", "--agent", "accept"]
    replayed = subprocess.run(
        [sys.executable, "-m", "streamer", *command],
        capture_output=True, text=True, cwd=ROOT, env=cli_env, timeout=60, check=True,
    )  # fmt: skip
    assert "replayed 20 dead letter(s)" in replayed.stdout
    poison.FIXED["on"] = True
    asyncio.run(
        run_until(
            poison.app,
            lambda: len(read_all(kafka_bootstrap, dlq, expect=34, timeout=2, idle=1)) >= 34,
        )
    )
    fixed = {k.decode() for k, why in reasons.items() if why == "RuntimeError"}
    outputs = read_all(kafka_bootstrap, env["TEST_OUT"], expect=len(good) + len(fixed))
    assert sorted(m.value().decode() for m in outputs) == sorted(good | fixed)
    shown = subprocess.run(
        [sys.executable, "-m", "streamer", "dlq", "show", "tests.apps.poison", "--json"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env, timeout=60, check=True,
    )  # fmt: skip
    (summary,) = json.loads(shown.stdout)
    assert (summary["count"], summary["replayed"], summary["pending"]) == (34, 20, 14)


def test_retries_keep_key_order_and_do_not_hold_up_other_lanes(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("events", partitions=2)
    app = App(unique_name("retry"), brokers=kafka_bootstrap, commit_interval=0.2)
    source = app.topic(src, key_type=str, value_type=int, partitions=2)
    failures = {"left": 2}
    done: list[tuple[str, int, float, int]] = []  # key, value, time, lane
    attempts: list[float] = []

    @app.agent(source, concurrency=4, on_error=ErrorPolicy(retries=3, backoff=0.4, jitter=0))
    async def work(stream: Stream) -> None:
        async for event in stream:
            if event.key == "slow" and event.value == 0:
                attempts.append(time.monotonic())
                if failures["left"]:
                    failures["left"] -= 1
                    raise RuntimeError("not yet")
            lane = event.partition * 4 + zlib.crc32(event.key.encode()) % 4
            done.append((event.key, event.value, time.monotonic(), lane))

    records = [(b"slow", b"0"), (b"slow", b"1")]
    records += [(f"k{i}".encode(), str(i).encode()) for i in range(400)]
    records += [(b"slow", b"2")]
    produce(kafka_bootstrap, src, records)
    asyncio.run(run_until(app, lambda: len(done) >= len(records)))

    slow = [(value, at) for key, value, at, _ in done if key == "slow"]
    assert [value for value, _ in slow] == [0, 1, 2]  # processed once each, in order
    assert len(attempts) == 3  # two failures, then success
    assert attempts[2] - attempts[0] >= 0.4 + 0.8 - 0.05  # the backoff really waited
    succeeded = slow[0][1]
    slow_lane = next(lane for key, _, _, lane in done if key == "slow")
    other_lanes = [at for key, _, at, lane in done if key != "slow" and lane != slow_lane]
    # Keys in other lanes finished while "slow" was still backing off: not held up.
    assert other_lanes and max(other_lanes) < succeeded


def test_stop_policy_stops_the_worker_with_the_event_uncommitted(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("events", partitions=1)
    app = App(unique_name("stop"), brokers=kafka_bootstrap, commit_interval=0.1)
    source = app.topic(src, key_type=str, value_type=int, partitions=1)
    seen: list[int] = []

    @app.agent(source, on_error=ErrorPolicy(retries=1, backoff=0.01, on_exhausted="stop"))
    async def work(stream: Stream) -> None:
        async for event in stream:
            if event.value == 5:
                raise ValueError("five")
            seen.append(event.value)

    produce(kafka_bootstrap, src, ((b"k", str(i).encode()) for i in range(10)))
    with pytest.raises(AgentFailed, match="ValueError: five"):
        asyncio.run(Worker(app, handle_signals=False).run())
    assert seen == [0, 1, 2, 3, 4]
    assert committed(kafka_bootstrap, app.group_id, src, 1) == {0: 5}


def test_stop_policy_on_an_undecodable_record_commits_nothing_past_it(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("events", partitions=1)
    app = App(
        unique_name("stop-decode"),
        brokers=kafka_bootstrap,
        commit_interval=0.1,
        on_error=ErrorPolicy(on_exhausted="stop"),
    )
    source = app.topic(src, key_type=str, value_type=dict, partitions=1)
    seen: list[int] = []

    @app.agent(source)
    async def work(stream: Stream) -> None:
        async for event in stream:
            seen.append(event.value["n"])

    records = [b'{"n": 0}', b"{broken", b'{"n": 2}', b'{"n": 3}']
    produce(kafka_bootstrap, src, ((b"k", value) for value in records))
    with pytest.raises(AgentFailed, match="not valid JSON"):
        asyncio.run(Worker(app, handle_signals=False).run())
    assert committed(kafka_bootstrap, app.group_id, src, 1) == {0: 1}
