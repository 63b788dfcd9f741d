"""Sliding windows and sessions without a broker: the TestDriver with simulated time and the
worker's real lanes and RocksDB stores. Expectations come from the plain-Python references
in tests/windows_reference.py over the same input."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer import App, ConfigError, Stream, StreamerError
from streamer.state.sessions import end_of
from streamer.state.sliding import last_of
from streamer.state.window_store import CLOSED_FLAG, META_KEY, OPEN_FLAG, window_key
from streamer.state.windows import WindowedTable
from streamer.testing import TestDriver
from tests import windows_reference as reference
from tests.unit.test_windows import Harness

T0 = 1_800_000_000
PARTITIONS = 2
KEYS = [f"k{i}" for i in range(6)]

Timed = reference.Timed


def _input(seed: int, count: int, step: int, disorder: int) -> list[Timed]:
    """Times in ms from T0: rising by up to ``step`` per event, each up to ``disorder``
    behind (out of order); now and then far behind (late)."""
    rng = random.Random(seed)
    clock = {p: 100_000 for p in range(PARTITIONS)}
    events = []
    for i in range(count):
        key = rng.choice(KEYS)
        partition = KEYS.index(key) % PARTITIONS
        clock[partition] += rng.randrange(0, step)
        behind = 60_000 if i % 53 == 20 else rng.randrange(0, disorder)
        events.append((key, partition, clock[partition] - behind))
    return events


def _run(kind: str, events: list[Timed], **options: Any) -> tuple[Counter[Any], ...]:
    """Count ``events`` in a ``kind`` table in the TestDriver, then advance simulated time
    until every window has closed; returns (on_close calls, emit-final records, every-update
    records' last value per window, late events) as Counters of ``(key, start, end, n)``."""
    app = App(f"kinds-{kind}")
    src = app.topic(app.id + "-src", key_type=str, value_type=str, partitions=PARTITIONS)
    finals = app.topic(app.id + "-finals", key_type=str, value_type=dict, partitions=1)
    updates = app.topic(app.id + "-updates", key_type=str, value_type=dict, partitions=1)
    closes: Counter[Any] = Counter()

    def on_close(key: str, start: float, end: float, value: int) -> None:
        closes[(key, round((start - T0) * 1000), round((end - T0) * 1000), value)] += 1

    table = app.table("counts", default=int, value_type=int)
    windowed: WindowedTable = getattr(table, kind)(on_close=on_close, idle_close=5, **options)
    windowed.stream_to(finals, final=True)
    windowed.stream_to(updates)

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for event in stream:
            windowed[event.key] += 1

    def window(record: tuple[str, dict[str, Any]]) -> tuple[str, int, int, Any]:
        key, body = record
        start, end = round((body["start"] - T0) * 1000), round((body["end"] - T0) * 1000)
        return key, start, end, body["value"]

    async def scenario() -> tuple[Counter[Any], ...]:
        async with TestDriver(app, start=T0 + 1_000) as driver:
            for key, partition, ms in events:
                await driver.send(src.name, key=key, value="x", timestamp=T0 + ms / 1000,
                                  partition=partition)  # fmt: skip
            await driver.settle()
            await driver.advance(120)  # idle: stream time follows the clock, all close
            final = Counter(window(r) for r in driver.records(finals.name))
            latest: dict[tuple[str, int], tuple[int, Any]] = {}
            for key, start, end, value in map(window, driver.records(updates.name)):
                latest[(key, start)] = (end, value)
            last = Counter((k, s, e, v) for (k, s), (e, v) in latest.items() if v is not None)
            return closes, final, last, Counter({"late": windowed.late_events})

    return asyncio.run(scenario())


def test_sliding_windows_match_the_reference_out_of_order() -> None:
    events = _input(seed=5, count=500, step=700, disorder=4_000)
    expected, late = reference.sliding(events, size=5_000, grace=3_000)
    closes, final, last, counted = _run("sliding", events, size=5, grace=3)
    assert closes == expected  # each window once, with its count
    assert final == expected and last == expected
    assert counted["late"] == late and late >= 5


def test_sessions_match_the_reference_out_of_order_with_bridging_events() -> None:
    events = _input(seed=8, count=500, step=1_500, disorder=5_000)
    expected, late = reference.sessions(events, gap=2_000, grace=4_000)
    closes, final, last, counted = _run("session", events, gap=2, grace=4)
    assert closes == expected
    assert final == expected and last == expected
    assert counted["late"] == late and late >= 5
    # The input has sessions that a late event merged (else this test proves little).
    singles = reference.sessions(sorted(events, key=lambda e: e[2]), gap=2_000, grace=10**9)[0]
    assert singles != expected


def test_a_bridging_event_merges_two_sessions_and_deletes_the_other_through_the_changelog() -> None:
    app = App("bridge")
    src = app.topic("bridge-src", key_type=str, value_type=str, partitions=1)
    updates = app.topic("bridge-updates", key_type=str, value_type=dict, partitions=1)
    closes: list[tuple[str, float, float, int]] = []

    def on_close(key: str, start: float, end: float, value: int) -> None:
        closes.append((key, start - T0, end - T0, value))

    sessions = app.table("sessions", default=int, value_type=int).session(
        5, grace=30, idle_close=2, on_close=on_close
    )
    sessions.stream_to(updates)

    @app.agent(src)
    async def count(stream: Stream) -> None:
        async for event in stream:
            sessions[event.key] += 1

    async def scenario() -> None:
        async with TestDriver(app, start=T0 + 100) as driver:
            for at in (10, 12, 22, 24):  # two sessions: [10, 12] and [22, 24], 10 s apart
                await driver.send(src.name, key="a", value="x", timestamp=T0 + at)
            await driver.settle()
            assert driver.table("sessions") == {("a", T0 + 10.0): 2, ("a", T0 + 22.0): 2}
            await driver.send(src.name, key="a", value="x", timestamp=T0 + 17)  # bridges
            await driver.settle()
            assert driver.table("sessions") == {("a", T0 + 10.0): 5}
            # The merged-away session was deleted in the same event: a changelog tombstone.
            changelog = [(r.key, r.value) for r in driver.raw(sessions.table.changelog)]
            later = window_key((T0 + 22) * 1000, b"a")
            assert (later, None) in changelog
            merged = [v for k, v in changelog if k == window_key((T0 + 10) * 1000, b"a")][-1]
            assert merged is not None and merged[:1] == OPEN_FLAG
            assert end_of(merged) == (T0 + 24) * 1000
            # The update stream says so too: the old session gone (value None), the new one.
            assert driver.records(updates.name)[-2:] == [
                ("a", {"start": T0 + 22.0, "end": T0 + 24.0, "value": None}),
                ("a", {"start": T0 + 10.0, "end": T0 + 24.0, "value": 5}),
            ]

            def reads() -> None:
                assert sessions["a"].at(T0 + 17) == 5
                assert sessions["a"].at(T0 + 30) == 0  # no session there: the default
                assert sessions["a"].range(T0, T0 + 100) == [(T0 + 10.0, 5)]
                assert not sessions["a"].is_closed(T0 + 11)

            reads()
            await driver.advance(60)
            assert closes == [("a", 10.0, 24.0, 5)]
            assert sessions["a"].is_closed(T0 + 11)
            await driver.advance(60)
            assert closes == [("a", 10.0, 24.0, 5)]  # once

    asyncio.run(scenario())


# -- on the worker's lanes: failures undone, restarts -----------------------------------------


def _kind(kind: str, closed: list[tuple[str, int, int, int]], **options: Any) -> Any:
    def build(app: App) -> WindowedTable:
        def on_close(key: str, start: float, end: float, value: int) -> None:
            closed.append((key, round(start * 1000), round(end * 1000), value))

        table = app.table("counts", default=int, value_type=int)
        windowed: WindowedTable = getattr(table, kind)(on_close=on_close, idle_close=1.0,
                                                       **options)  # fmt: skip
        return windowed

    return build


def _add(h: Harness, key: str, seconds: float, *, fail: bool = False) -> None:
    def do() -> None:
        h.windowed[key] += 1

    h.event(key, seconds, do)
    if fail:
        h.fail()
    else:
        h.complete()


def test_a_failed_bridging_event_is_undone_and_its_retry_merges_once(tmp_path: Path) -> None:
    closed: list[tuple[str, int, int, int]] = []
    h = Harness(tmp_path, _kind("session", closed, gap=5, grace=60, retention=60))
    for at in (100, 102, 112):
        _add(h, "a", at)
    _add(h, "a", 107, fail=True)  # bridges [100, 102] and [112, 112], then the agent fails
    assert h.windowed.as_dict() == {("a", 100.0): 2, ("a", 112.0): 1}
    _add(h, "a", 130)
    _add(h, "a", 107)  # the retry
    assert h.windowed.as_dict() == {("a", 100.0): 4, ("a", 130.0): 1}
    _add(h, "b", 135)  # a second of stream time later: the index forgot the merged-away one
    assert h.windowed._parts[0].starts[b"a"] == [100_000, 130_000]  # type: ignore[attr-defined]
    h.tick(10**10)
    assert sorted(closed) == [
        ("a", 100_000, 112_000, 4), ("a", 130_000, 130_000, 1), ("b", 135_000, 135_000, 1)
    ]  # fmt: skip


def test_a_failed_sliding_event_leaves_no_window_behind(tmp_path: Path) -> None:
    closed: list[tuple[str, int, int, int]] = []
    h = Harness(tmp_path, _kind("sliding", closed, size=10, grace=60))
    _add(h, "a", 100)
    _add(h, "a", 105, fail=True)
    _add(h, "a", 108)
    _add(h, "a", 103)
    h.tick(10**10)
    events = [("a", 0, 100_000), ("a", 0, 108_000), ("a", 0, 103_000)]
    expected, _ = reference.sliding(events, size=10_000, grace=60_000)
    assert Counter(closed) == expected


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_restarts_mid_stream_give_the_reference_windows(kind: str, tmp_path: Path) -> None:
    closed: list[tuple[str, int, int, int]] = []
    options = {"size": 4} if kind == "sliding" else {"gap": 2}
    h = Harness(tmp_path, _kind(kind, closed, grace=3, **options))
    rng = random.Random(4)
    events, clock = [], 100_000
    for _ in range(300):
        clock += rng.randrange(0, 1_200)
        events.append((rng.choice("abc"), 0, clock - rng.randrange(0, 4_000)))
    for i, (key, _, ms) in enumerate(events):
        _add(h, key, ms / 1000)
        if i % 37 == 36:
            h.restart()  # checkpoint, close the store, attach it anew: indexes rebuilt
    h.restart()
    h.tick(10**10)
    ref = reference.sliding if kind == "sliding" else reference.sessions
    expected, late = ref(events, 4_000 if kind == "sliding" else 2_000, 3_000)
    assert Counter(closed) == expected
    assert h.windowed.late_events == late
    # Every window expired (the tick's stream time passed their retention): the store holds
    # only the metadata, and the in-memory indexes of event times and starts are empty.
    h.checkpoint()
    assert [key for key, _ in h.part.store.items()] == [META_KEY]
    state = h.windowed._parts[0]
    assert not getattr(state, "times" if kind == "sliding" else "starts")


def test_sliding_stored_values_carry_the_flag_and_the_latest_time(tmp_path: Path) -> None:
    closed: list[tuple[str, int, int, int]] = []
    h = Harness(tmp_path, _kind("sliding", closed, size=10))
    _add(h, "a", 100)
    _add(h, "a", 104)
    left = h.part.read(window_key(94_000, b"a"))  # [94, 104], holding 100 and 104
    right = h.part.read(window_key(100_001, b"a"))  # [100.001, 110.001], holding 104
    assert left is not None and left[:1] == OPEN_FLAG and last_of(left) == 104_000
    assert right is not None and last_of(right) == 104_000 and right[9:] == b"1"
    _add(h, "a", 200)
    assert h.part.read(window_key(94_000, b"a"))[:1] == CLOSED_FLAG  # type: ignore[index]

    def reads() -> None:
        counts = h.windowed["a"]
        assert counts.at(104) == 2 and counts.at(100) == 1  # the windows ending there
        assert counts.current() == 1  # the window ending at the event in progress (200)
        assert counts.range(90, 101) == [(90.0, 1), (94.0, 2), (100.001, 1)]
        assert counts.is_closed(104) and not counts.is_closed(200)

    h.event("a", 200, reads)
    h.complete()


@pytest.mark.parametrize(
    ("declare", "says"),
    [
        (lambda t: t.sliding(10, grace=5, retention=12), "retention"),
        (lambda t: t.sliding(0), "must be > 0"),
        (lambda t: t.session(0), "must be > 0"),
        (lambda t: t.session(-1), "finite"),
    ],
)
def test_bad_sliding_and_session_declarations_say_why(
    declare: Callable[[Any], Any], says: str
) -> None:
    app = App("bad", brokers="unused:1")
    with pytest.raises(ConfigError, match=says):
        declare(app.table("t", default=int, value_type=int))


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_the_cli_lists_a_keys_windows_with_their_ends(kind: str, tmp_path: Path) -> None:
    from streamer.state.sessions import pack as pack_session
    from streamer.state.sliding import pack as pack_sliding
    from streamer.state.store import PartitionStore

    pack = pack_sliding if kind == "sliding" else pack_session
    store = PartitionStore(tmp_path / "cli-app" / "counts" / "0")
    # sliding: the windows [100, 102] and [101.5, 103.5]; sessions [100, 100.5], [104, 107].
    first, second = (100_000, 101_500) if kind == "sliding" else (100_000, 104_000)
    info = (102_000, 103_000) if kind == "sliding" else (100_500, 107_000)  # last / end
    store.apply(
        {
            window_key(first, b"a"): pack(CLOSED_FLAG, info[0], b"3"),
            window_key(second, b"a"): pack(OPEN_FLAG, info[1], b"2"),
            window_key(first, b"b"): pack(OPEN_FLAG, info[0], b"9"),
        },
        {},
    )
    store.close()
    env = {
        **os.environ,
        "STREAMER_BROKERS": "127.0.0.1:1",
        "STREAMER_STATE_DIR": str(tmp_path),
        "TEST_APP_ID": "cli-app",
        "TEST_SRC": "src",
        "TEST_OUT": "out",
        "TEST_KIND": kind,
        "TEST_SIZE": "2",
        "TEST_RETENTION": "10",
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "tables", "tests.apps.windows_app", "get", "counts",
         "a", "--json"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    windows = [
        (w["start"], w["end"], w["value"], w["closed"]) for w in json.loads(done.stdout)["windows"]
    ]
    if kind == "sliding":  # the end is start + size, both included
        assert windows == [(100.0, 102.0, 3, True), (101.5, 103.5, 2, False)]
    else:  # the end is the session's last event, from the stored value
        assert windows == [(100.0, 100.5, 3, True), (104.0, 107.0, 2, False)]


def test_sessions_merge_with_the_merge_function_and_say_when_a_plus_b_cannot(
    tmp_path: Path,
) -> None:
    def build(merge: Any) -> Callable[[App], WindowedTable]:
        def declare(app: App) -> WindowedTable:
            table = app.table("tags", default=dict, value_type=dict)
            windowed: WindowedTable = table.session(5, grace=60, merge=merge, idle_close=None)
            return windowed

        return declare

    def tag(h: Harness, seconds: float, value: str) -> None:
        def do() -> None:
            h.windowed["a"].update(lambda tags: {**tags, value: seconds})

        h.event("a", seconds, do)

    h = Harness(tmp_path / "union", build(lambda a, b: {**a, **b}))
    for seconds, value in ((100, "x"), (108, "y"), (104, "z")):  # 104 bridges the two
        tag(h, seconds, value)
        h.complete()
    assert h.windowed.as_dict() == {("a", 100.0): {"x": 100, "y": 108, "z": 104}}

    h = Harness(tmp_path / "plus", build(None))  # the default, a + b, cannot add dicts
    tag(h, 100, "x")
    h.complete()
    tag(h, 108, "y")
    h.complete()
    with pytest.raises(StreamerError, match=r"merge=\.\.\. to \.session"):
        tag(h, 104, "z")
