"""TestDriver as a new user writes tests with it (issue 17, item 9): raw records for the
dead-letter path, ``advance`` right after ``send``, and the late events of a windowed table.
The last test runs a user's test file with pytest, as the user types it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streamer import App, ConfigError, Event, Stream
from streamer.testing import TestDriver


class Payment(BaseModel):
    id: str
    amount: float


def _payments_app(name: str) -> tuple[App, Any, Any]:
    app = App(name)
    payments = app.topic(f"{name}-payments", key_type=str, value_type=Payment, partitions=2)
    approved = app.topic(f"{name}-approved", key_type=str, value_type=float, partitions=2)

    @app.agent(payments, sink=[approved])
    async def approve(stream: Stream) -> AsyncIterator[float]:
        async for event in stream:
            yield event.value.amount

    return app, payments, approved


def test_send_raw_reaches_the_dead_letter_topic_with_its_headers() -> None:
    app, payments, approved = _payments_app("kit-raw")

    async def scenario(driver: TestDriver) -> tuple[list[Any], list[Any]]:
        await driver.send_raw(payments.name, b"p1", b"{not json", [("origin", b"legacy")])
        await driver.send(payments.name, key="p2", value=Payment(id="p2", amount=3.5))
        await driver.settle()
        return driver.raw(app.dead_letter_topic(app.agents[0])), driver.records(approved.name)

    dead, good = TestDriver.run(app, scenario)
    assert good == [("p2", 3.5)]
    (letter,) = dead
    assert (letter.key, letter.value) == (b"p1", b"{not json")
    headers = dict(letter.headers or [])
    assert headers["origin"] == b"legacy"
    assert headers["streamer.error.type"] == b"SerializationError"


def test_send_raw_to_a_topic_the_app_does_not_have_is_refused() -> None:
    app, _, _ = _payments_app("kit-raw-missing")

    async def scenario(driver: TestDriver) -> None:
        await driver.send_raw("nope", b"k", b"v")

    with pytest.raises(ConfigError, match="topic 'nope' is not a topic of app 'kit-raw-missing'"):
        TestDriver.run(app, scenario)


def _windowed_app(
    name: str, on_late: Any = None, idle_close: float | None = None
) -> tuple[App, Any, Any]:
    app = App(name)
    clicks = app.topic(f"{name}-clicks", key_type=str, value_type=str, partitions=1)
    closed = app.topic(f"{name}-closed", key_type=str, value_type=int)

    async def emit(key: str, start: float, end: float, value: int) -> None:
        await closed.send(key=key, value=value)

    counts = app.table("counts", default=int, value_type=int).tumbling(
        60, grace=0, on_close=emit, idle_close=idle_close, on_late=on_late
    )

    @app.agent(clicks)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    return app, clicks, closed


T0 = 1_800_000_000.0  # a window boundary


def test_advance_right_after_send_processes_the_sent_records_first() -> None:
    app, clicks, closed = _windowed_app("kit-advance", idle_close=30)

    async def scenario(driver: TestDriver) -> list[Any]:
        await driver.send(clicks.name, key="a", value="x", timestamp=T0 + 1)
        await driver.send(clicks.name, key="a", value="x", timestamp=T0 + 2)
        # No settle(): advance processes the two records at the current time, then moves
        # time on, so the idle partition's window closes (it closed nothing before).
        await driver.advance(90)
        return driver.records(closed.name)

    assert TestDriver.run(app, scenario, start=T0 + 3) == [("a", 2)]


def test_late_events_are_listed_per_table() -> None:
    seen: list[Event] = []
    app, clicks, _ = _windowed_app("kit-late", on_late=seen.append)

    async def scenario(driver: TestDriver) -> tuple[list[Event], int]:
        await driver.send(clicks.name, key="a", value="on time", timestamp=T0 + 1)
        await driver.send(clicks.name, key="a", value="closes", timestamp=T0 + 61)
        await driver.send(clicks.name, key="b", value="too late", timestamp=T0 + 5)
        await driver.settle()
        return driver.late_events("counts"), app.tables["counts"].windowed.late_events

    late, counted = TestDriver.run(app, scenario, start=T0)
    assert [(e.key, e.value) for e in late] == [("b", "too late")]
    assert counted == 1
    assert [(e.key, e.value) for e in seen] == [("b", "too late")]  # the app's own on_late too
    assert app.tables["counts"].windowed.on_late == seen.append  # put back on stop


def test_late_events_of_a_table_that_is_not_windowed_is_refused() -> None:
    app, _, _ = _payments_app("kit-late-plain")
    app.table("totals", default=float)

    async def scenario(driver: TestDriver) -> None:
        driver.late_events("totals")

    with pytest.raises(ConfigError, match="table 'totals' is not windowed"):
        TestDriver.run(app, scenario)


def test_a_users_test_file_runs_under_pytest(tmp_path: Path) -> None:
    (tmp_path / "payments.py").write_text(
        textwrap.dedent(
            """
            import streamer
            from pydantic import BaseModel

            class Payment(BaseModel):
                id: str
                amount: float

            app = streamer.App("payments")
            payments = app.topic("payments", key_type=str, value_type=Payment)

            @app.agent(payments)
            async def check(stream):
                async for event in stream:
                    pass
            """
        )
    )
    (tmp_path / "test_payments.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            from payments import app, payments
            from streamer.testing import TestDriver

            def test_malformed_payment_is_dead_lettered():
                async def scenario():
                    async with TestDriver(app) as driver:
                        await driver.send_raw(payments.name, b"p1", b"{oops")
                        await driver.advance(1)
                        return driver.records(app.dead_letter_topic(app.agents[0]))

                assert asyncio.run(scenario()) == [(b"p1", b"{oops")]
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_payments.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
