"""Windowed tables without a broker: window arithmetic, the key layout, and the table driven
through the worker's real lanes, partition tracker and RocksDB stores (no Kafka involved)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer import App, ConfigError, ErrorPolicy, Stream
from streamer._context import current_lane, settle
from streamer.events import Event
from streamer.state.keyed import TablePartition
from streamer.state.store import PartitionStore
from streamer.state.window_store import (
    CLOSED_FLAG,
    META_KEY,
    OPEN_FLAG,
    WindowSpec,
    split_key,
    window_key,
)
from streamer.state.windows import WindowedTable
from streamer.worker.lanes import Lane, LaneContext
from streamer.worker.partition import Output, PartitionState, Pending, WorkerStats
from streamer.worker.scheduler import WorkerStager

S = 1000  # ms per second

# -- arithmetic -------------------------------------------------------------------------------


def test_tumbling_windows_are_epoch_aligned() -> None:
    spec = WindowSpec.of(60, 60, 10, 3600)
    assert spec.starts(0) == [0]
    assert spec.starts(59_999) == [0]
    assert spec.starts(60_000) == [60_000]
    t = 1_700_000_123_456
    (start,) = spec.starts(t)
    assert start % 60_000 == 0 and start <= t < start + 60_000
    assert spec.last_start(t) == start


def test_hopping_membership() -> None:
    spec = WindowSpec.of(60, 20, 0, 3600)
    # Every window of size 60 starting on a multiple of 20 that contains t, newest first.
    assert spec.starts(125_000) == [120_000, 100_000, 80_000]
    assert spec.starts(120_000) == [120_000, 100_000, 80_000]
    assert spec.starts(119_999) == [100_000, 80_000, 60_000]
    assert spec.starts(30_000) == [20_000, 0]  # none before the epoch
    # A step that does not divide the size: windows still contain exactly their times.
    odd = WindowSpec.of(50, 20, 0, 3600)
    for t in range(0, 200_000, 1_250):
        expected = [s for s in range(0, t + 1, 20_000) if s <= t < s + 50_000]
        assert sorted(odd.starts(t)) == expected


def test_overlapping_ranges() -> None:
    spec = WindowSpec.of(60, 20, 0, 3600)
    assert list(spec.overlapping(100_000, 130_000)) == [60_000, 80_000, 100_000, 120_000]
    assert list(spec.overlapping(0, 1)) == [0]
    assert list(spec.overlapping(5_000, 5_000)) == []
    tumbling = WindowSpec.of(10, 10, 0, 3600)
    assert list(tumbling.overlapping(10_000, 30_000)) == [10_000, 20_000]


def test_lateness_and_expiry_horizons() -> None:
    spec = WindowSpec.of(10, 10, 2, 5)
    # Window [0, 10) takes events while stream time < 12 s, and expires at 15 s.
    assert spec.late_before(11_999) < 0 <= spec.late_before(12_000)
    assert spec.expired_before(14_999) < 0 <= spec.expired_before(15_000)


@pytest.mark.parametrize(
    ("size", "step", "grace", "retention", "says"),
    [
        (0, 0, 0, 0, "must be > 0"),
        (10, 20, 0, 100, "step"),
        (10, 10, 5, 1, "retention"),
        (-1, 10, 0, 100, "finite"),
    ],
)
def test_bad_window_specs_say_why(
    size: float, step: float, grace: float, retention: float, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        WindowSpec.of(size, step, grace, retention)


def test_key_layout_orders_by_window_start() -> None:
    keys = [window_key(start, key) for start in (2_000, 1_000, 10**13) for key in (b"zz", b"a")]
    assert [split_key(k)[0] for k in sorted(keys)] == [1_000, 1_000, 2_000, 2_000, 10**13, 10**13]
    assert split_key(window_key(1_000, b"user")) == (1_000, b"user")
    assert all(key < META_KEY for key in keys)  # the meta key sorts after every window


def test_a_table_is_windowed_once() -> None:
    app = App("w", brokers="unused:1")
    table = app.table("t", default=int, value_type=int)
    table.tumbling(10)
    with pytest.raises(ConfigError, match="already windowed"):
        table.hopping(10, 5)


# -- the table on the worker's real lanes -----------------------------------------------------


class Harness:
    """One source partition with ``lanes`` lanes and one windowed table partition in a real
    RocksDB store: events are taken, completed or failed as the worker does."""

    def __init__(self, tmp_path: Path, build: Callable[[App], WindowedTable], lanes: int = 1):
        self.tmp_path = tmp_path
        self.app = App("w", brokers="unused:1")
        source = self.app.topic("in", key_type=str, value_type=str, partitions=1)
        self.out = self.app.topic("out", key_type=str, value_type=str)

        @self.app.agent(source)
        async def noop(stream: Stream) -> None:
            async for _ in stream:
                pass

        self.windowed = build(self.app)
        self.released: list[Output] = []
        self.state = PartitionState(
            "in", 0, lambda effects: self.released.extend(effects.outputs), WorkerStats()
        )
        ctx = LaneContext(ErrorPolicy(), "dlq", lambda s: None, lambda e: None, lambda a, r: None)
        self.lanes = [Lane(self.state, self.app.agents[0], i, ctx) for i in range(lanes)]
        self.offset = 0
        self.part = self.attach()

    def attach(self) -> TablePartition:
        """Open the store (again) as a fresh table partition, as recovery does."""
        store = PartitionStore(self.tmp_path / "store")
        part = TablePartition(self.windowed.table, 0, store)
        self.windowed.table.attach(part)
        self.state.tables[:] = [part]
        self.part = part
        return part

    def restart(self) -> dict[bytes, bytes | None]:
        """Checkpoint, close the store and attach it anew; returns what was written."""
        written = self.checkpoint()
        self.part.store.close()
        self.windowed.table.detach(0)
        self.attach()
        return written

    def event(self, key: str, seconds: float, do: Callable[[], Any], lane: int = 0) -> None:
        """Take one event (timestamp ``seconds``) on ``lane`` and run ``do`` for it."""
        event = Event(key, "v", [], round(seconds * S), "in", 0, self.offset)
        pending = Pending(event, 1, self.offset, None)  # type: ignore[arg-type]
        self.offset += 1
        self.state.track(pending)
        self.lanes[lane].current.append(pending)
        token = current_lane.set(self.lanes[lane])
        try:
            do()
        finally:
            current_lane.reset(token)

    def complete(self, lane: int = 0) -> None:
        self.lanes[lane].complete_current()

    def fail(self, lane: int = 0) -> None:
        self.lanes[lane].drop_current()

    def tick(self, now: float) -> None:
        token = current_lane.set(WorkerStager(self.released.append))
        try:
            self.windowed.table.tick(now)
        finally:
            current_lane.reset(token)

    def checkpoint(self) -> dict[bytes, bytes | None]:
        written, self.part.dirty = self.part.dirty, {}
        self.part.store.apply(written, {})
        self.part.checkpointed(written)
        return written

    def closes(self) -> list[tuple[str, str]]:
        return [(o[1].decode(), o[2].decode()) for o in self.released if o[0] == "out"]


def _counting(
    size: float,
    *,
    step: float | None = None,
    grace: float = 0.0,
    retention: float | None = None,
    idle_close: float | None = None,
    late: list[Event] | None = None,
) -> Callable[[App], WindowedTable]:
    def build(app: App) -> WindowedTable:
        out = app.topic("out", key_type=str, value_type=str)

        async def emit(key: str, start: float, end: float, value: int) -> None:
            await out.send(key=key, value=f"{start:g}-{end:g}={value}")

        table = app.table("counts", default=int, value_type=int)
        return table.hopping(
            size,
            size if step is None else step,
            grace=grace,
            retention=retention,
            on_close=emit,
            on_late=late.append if late is not None else None,
            idle_close=idle_close,
        )

    return build


def _add(h: Harness, key: str, seconds: float, lane: int = 0, complete: bool = True) -> None:
    def do() -> None:
        h.windowed[key] += 1

    h.event(key, seconds, do, lane)
    if complete:
        h.complete(lane)


def test_tumbling_counts_out_of_order_late_and_close_inside_the_event(tmp_path: Path) -> None:
    late: list[Event] = []
    h = Harness(tmp_path, _counting(10, grace=2, late=late))
    counts = h.windowed
    for seconds in (1, 5, 11, 3):  # 3 s is out of order, but within grace (11 < 10 + 2)
        _add(h, "a", seconds)
    assert h.closes() == []
    h.event("a", 13, lambda: counts["a"].update(lambda v: v + 1), 0)
    # Stream time 13 passed [0, 10) + 2 s grace: closed inside the event, its send staged
    # with it: nothing released until the event completes.
    assert h.closes() == []
    h.complete()
    assert h.closes() == [("a", "0-10=3")]
    _add(h, "a", 4)  # every window of 4 s is past its grace: late
    assert counts.late_events == 1 and [e.timestamp for e in late] == [4_000]
    assert counts.closed_windows == 1

    def reads() -> None:
        assert counts["a"].current() == 2  # window [10, 20) of the event in progress
        assert counts["a"].at(7) == 3
        assert counts["a"].at(25) == 0  # no value: the default
        assert counts["a"].range(0, 30) == [(0.0, 3), (10.0, 2)]
        assert counts["a"].is_closed(0) and not counts["a"].is_closed(10)

    h.event("a", 14, reads)
    h.complete()
    assert counts.as_dict() == {("a", 0.0): 3, ("a", 10.0): 2}


def test_hopping_adds_to_every_open_window(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(30, step=10, grace=0))
    counts = h.windowed
    _add(h, "k", 25)  # windows 0, 10, 20
    _add(h, "k", 31)  # windows 10, 20, 30; stream 31 closes [0, 30)
    assert h.closes() == [("k", "0-30=1")]
    _add(h, "k", 9)  # windows -20..0 and 0: all closed/late
    assert counts.late_events == 1
    _add(h, "k", 15)  # [10, 40) is open, [0, 30) is past its grace: applied to the open one
    assert counts.late_events == 1
    assert counts.as_dict() == {("k", 0.0): 1, ("k", 10.0): 3, ("k", 20.0): 2, ("k", 30.0): 1}


def test_a_failed_event_undoes_its_closes_and_they_happen_again(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10))
    _add(h, "a", 1)
    _add(h, "b", 2)
    _add(h, "a", 11, complete=False)  # closes [0, 10) of a and b, inside this event
    h.fail()  # the agent failed: the closes and their sends are undone
    assert h.closes() == []
    assert not h.windowed["a"].is_closed(0)
    _add(h, "b", 12)  # the retry (any event) closes them again, once
    assert sorted(h.closes()) == [("a", "0-10=1"), ("b", "0-10=1")]
    _add(h, "a", 13)
    assert len(h.closes()) == 2


def test_a_window_with_writes_in_flight_closes_after_they_complete(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10), lanes=2)
    _add(h, "a", 5, lane=0, complete=False)  # lane 0 still busy with [0, 10) of a
    _add(h, "b", 15, lane=1, complete=False)  # stream 15: [0, 10) is due, but not final
    assert h.windowed.closed_windows == 0
    h.complete(0)
    h.complete(1)
    _add(h, "b", 16, lane=1)
    assert h.closes() == [("a", "0-10=1")]


def test_idle_partition_closes_by_tick_and_restart_does_not_close_again(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(2, idle_close=1.0))
    _add(h, "a", 1)
    _add(h, "b", 1.5)
    now = time.time()
    h.tick(now + 0.5)  # not idle long enough
    assert h.closes() == []
    h.tick(now + 3)  # 3 s idle credited: stream 4.5 s passes [0, 2)
    assert sorted(h.closes()) == [("a", "0-2=1"), ("b", "0-2=1")]
    written = h.restart()  # the tick's writes went through the next checkpoint
    assert written[window_key(0, b"a")] == CLOSED_FLAG + b"1"
    assert META_KEY in written
    h.tick(time.time() + 10)
    _add(h, "a", 3)
    assert len(h.closes()) == 2  # nothing closed twice after the restart
    assert h.windowed.stream_time(0) is not None and h.windowed.stream_time(0) >= 4.5


def test_restart_restores_open_windows_and_stream_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10, grace=1, idle_close=1.0))
    _add(h, "a", 1)
    _add(h, "a", 12)  # closes [0, 10)
    _add(h, "b", 15)
    h.restart()
    assert h.windowed.stream_time(0) == 15
    _add(h, "c", 2)  # stream time survived: [0, 10) is still past its grace
    assert h.windowed.late_events == 1
    h.tick(time.time() + 30)  # idle: [10, 20) of a and b close after the restart
    assert sorted(h.closes()) == [("a", "0-10=1"), ("a", "10-20=1"), ("b", "10-20=1")]


def test_windows_expire_after_retention(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10, grace=0, retention=5, idle_close=1.0))
    _add(h, "a", 1)
    _add(h, "a", 11)  # closes [0, 10)
    h.checkpoint()
    _add(h, "a", 16)  # stream 16 >= 10 + 5: [0, 10) expires, tombstone staged with the event
    written = h.checkpoint()
    assert written[window_key(0, b"a")] is None
    assert h.windowed.expired_windows == 1
    assert h.windowed.as_dict() == {("a", 10.0): 2}
    h.tick(time.time() + 60)  # idle: [10, 20) closes and expires by tick
    written = h.checkpoint()
    assert written[window_key(10_000, b"a")] is None
    assert h.windowed.as_dict() == {}
    assert [o[2] for o in h.released] == [b"0-10=1", b"10-20=2"]


def test_stored_values_carry_the_close_flag(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10))
    _add(h, "a", 1)
    assert h.part.read(window_key(0, b"a")) == OPEN_FLAG + b"1"
    _add(h, "a", 10)
    assert h.part.read(window_key(0, b"a")) == CLOSED_FLAG + b"1"


def _suspending(seen: list[tuple[str, float, int]]) -> Callable[[App], WindowedTable]:
    def build(app: App) -> WindowedTable:
        out = app.topic("out", key_type=str, value_type=str)

        async def on_close(key: str, start: float, end: float, value: int) -> None:
            if key == "boom":
                raise RuntimeError("callback bug")
            if key.startswith("slow"):
                await asyncio.sleep(0.01)  # real I/O: the rest runs in a task
            seen.append((key, start, value))
            await out.send(key=key, value=f"{start:g}-{end:g}={value}")

        table = app.table("counts", default=int, value_type=int)
        return table.tumbling(10, on_close=on_close, idle_close=1.0)

    return build


def test_a_suspended_callback_is_held_by_its_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, float, int]] = []

    async def scenario() -> None:
        h = Harness(tmp_path, _suspending(seen))
        for key in ("boom", "slow", "fine"):
            _add(h, key, 1)
        with caplog.at_level(logging.INFO, "streamer.windows"):
            _add(h, "x", 11, complete=False)  # closes all three [0, 10), inside this event
            assert seen == [("fine", 0.0, 1)]  # inline; "slow" waits in a task
            await settle(h.lanes[0])  # what the stream does before the next event
            assert sorted(seen) == [("fine", 0.0, 1), ("slow", 0.0, 1)]
            assert h.closes() == []  # everything still staged with the event
            h.complete()
        assert sorted(h.closes()) == [("fine", "0-10=1"), ("slow", "0-10=1")]
        assert h.windowed.closed_windows == 3
        assert "callback bug" in caplog.text and "suspends" in caplog.text

    asyncio.run(scenario())


def test_a_suspended_callback_of_a_failed_attempt_is_cancelled(tmp_path: Path) -> None:
    seen: list[tuple[str, float, int]] = []

    async def scenario() -> None:
        h = Harness(tmp_path, _suspending(seen))
        _add(h, "slow", 1)
        _add(h, "x", 11, complete=False)  # closes [0, 10) of "slow"; its callback suspends
        h.fail()  # the attempt failed: the close is undone, the callback must not send
        await settle(h.lanes[0])  # the retry's stream: cancels the stale continuation
        await asyncio.sleep(0.03)
        assert seen == [] and h.closes() == []
        assert not h.windowed["slow"].is_closed(0)
        _add(h, "x", 11, complete=False)  # the retry closes it again
        await settle(h.lanes[0])
        h.complete()
        assert h.closes() == [("slow", "0-10=1")]

    asyncio.run(scenario())


def test_an_idle_close_commits_markers_with_the_outputs_of_suspended_callbacks(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, float, int]] = []

    async def scenario() -> None:
        h = Harness(tmp_path, _suspending(seen))
        _add(h, "slow", 1)
        _add(h, "fine", 2)
        h.tick(time.time() + 30)  # idle: both close; "slow" suspends
        # Neither the markers nor the outputs are in the checkpoint while "slow" runs.
        assert h.closes() == []
        assert h.part.dirty[window_key(0, b"fine")] == OPEN_FLAG + b"1"
        assert h.part.dirty[window_key(0, b"slow")] == OPEN_FLAG + b"1"
        while len(h.closes()) < 2:
            await asyncio.sleep(0.005)
        assert sorted(h.closes()) == [("fine", "0-10=1"), ("slow", "0-10=1")]
        written = h.restart()
        assert written[window_key(0, b"slow")] == CLOSED_FLAG + b"1"
        h.tick(time.time() + 60)
        assert len(h.closes()) == 2  # never again after the restart

    asyncio.run(scenario())


def test_an_idle_close_in_flight_when_the_partition_moves_is_dropped(tmp_path: Path) -> None:
    seen: list[tuple[str, float, int]] = []

    async def scenario() -> None:
        h = Harness(tmp_path, _suspending(seen))
        _add(h, "slow", 1)
        h.checkpoint()
        h.tick(time.time() + 30)  # closes; the callback suspends
        h.restart()  # the partition is attached anew (a rewind or a hand-over)
        await asyncio.sleep(0.03)
        assert seen == [("slow", 0.0, 1)] and h.closes() == []  # dropped, not committed
        assert not h.windowed["slow"].is_closed(0)
        h.tick(time.time() + 60)  # the owner closes it again, from the committed state
        while not h.closes():
            await asyncio.sleep(0.005)
        assert h.closes() == [("slow", "0-10=1")]

    asyncio.run(scenario())


def test_writes_outside_an_event_are_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10))
    with pytest.raises(Exception, match="outside an agent"):
        h.windowed["a"] += 1
    assert h.windowed["a"].at(1) == 0  # reads outside events search the owned partitions


def test_the_plain_table_of_a_windowed_one_refuses_writes(tmp_path: Path) -> None:
    h = Harness(tmp_path, _counting(10))

    def write_plain() -> None:
        h.windowed.table["a"] = 1

    with pytest.raises(Exception, match="holds windows"):
        h.event("a", 1, write_plain)
