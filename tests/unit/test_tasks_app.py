"""apps.tasks in the TestDriver: request-reply, rate limits, delayed reminders and retry
topics on simulated time."""

from __future__ import annotations

import asyncio

from apps import tasks
from streamer.testing import TestDriver


def test_the_tasks_app_on_simulated_time() -> None:
    async def scenario(driver: TestDriver) -> None:
        assert await tasks.quote.ask(key="alice", value=[3, 4.5], timeout=10) == 7.5
        assert await tasks.quote.ask(key="bob", value=[100, 20], timeout=10) == 108.0

        await driver.send(tasks.signups.name, key="carol", value="Carol")
        await driver.settle()
        assert driver.records(tasks.emails.name) == [("carol", "to carol: welcome, Carol!")]
        await driver.advance(24 * 3600)
        assert driver.records(tasks.emails.name)[-1] == (
            "carol", "to carol: how is it going so far?",
        )  # fmt: skip

        tasks.OUTBOX_DOWN["on"] = True
        try:
            await driver.send(tasks.notifications.name, key="dave", value="hello")
            await driver.settle()
        finally:
            tasks.OUTBOX_DOWN["on"] = False
        assert len(driver.records(tasks.emails.name)) == 2
        await driver.advance(30)  # back from the first retry topic
        assert driver.records(tasks.emails.name)[-1] == ("dave", "to dave: hello")

        # Two a second per customer: a burst of five takes two more seconds.
        for i in range(5):
            await driver.send(tasks.notifications.name, key="erin", value=f"n{i}")
        for _ in range(200):
            await asyncio.sleep(0)
        erin = [v for k, v in driver.records(tasks.emails.name) if k == "erin"]
        assert len(erin) == 2
        await driver.advance(2)
        erin = [v for k, v in driver.records(tasks.emails.name) if k == "erin"]
        assert erin == [f"to erin: n{i}" for i in range(5)]

    TestDriver.run(tasks.app, scenario)
