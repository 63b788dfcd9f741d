"""The garbage collector while a worker runs (streamer.worker.collector, gc_threshold)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamer import App, Stream
from streamer.testing import TestDriver
from streamer.worker.collector import tuned_collector


@pytest.fixture(autouse=True)
def default_collector() -> Iterator[None]:
    """Each test starts from the interpreter's settings, whatever ran before it."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.set_threshold(*saved)


def test_the_collector_is_tuned_inside_and_restored_after() -> None:
    with tuned_collector(12_345):
        assert gc.get_threshold() == (12_345, 10, 10)
        assert gc.get_freeze_count() > 0  # start-up objects no longer walked
        assert gc.isenabled()  # cycles are still collected
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_nested_uses_restore_once_when_the_last_leaves() -> None:
    with tuned_collector(5_000):
        with tuned_collector(5_000):
            pass
        assert gc.get_threshold()[0] == 5_000  # the outer worker still runs
    assert gc.get_threshold()[0] == 700


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), tuned_collector(5_000):
        raise RuntimeError("the worker failed")
    assert gc.get_threshold()[0] == 700
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_collector_alone() -> None:
    gc.set_threshold(900, 11, 12)
    with tuned_collector(0):
        assert gc.get_threshold() == (900, 11, 12)
        assert gc.get_freeze_count() == 0


def test_a_running_worker_uses_the_apps_threshold() -> None:
    app = App("gc-tuned", brokers="memory", gc_threshold=4_321)
    words = app.topic("words", value_type=str)
    seen: list[tuple[int, int, int]] = []

    @app.agent(words)
    async def watch(stream: Stream) -> None:
        async for _event in stream:
            seen.append(gc.get_threshold())

    async def scenario(driver: TestDriver) -> None:
        await driver.send("words", value="hello")
        await driver.settle()

    TestDriver.run(app, scenario)
    assert seen == [(4_321, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)  # the worker stopped: restored


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    freed = 0

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        _Cycle.freed += 1


def test_garbage_is_collected_before_freezing_and_after_thawing() -> None:
    gc.set_threshold(1_000_000, 10, 10)  # no collection but the ones under test
    _Cycle.freed = 0
    _Cycle()  # garbage already when the worker starts
    with tuned_collector(1_000_000):  # no young collection can run meanwhile
        assert _Cycle.freed == 1  # collected, not frozen
        _Cycle()  # garbage made while the worker runs
    assert _Cycle.freed == 2  # collected on the way out, in this thread
