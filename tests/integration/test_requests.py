"""Request-reply on the real broker: ``agent.ask`` and ``yield Reply``, under both
guarantees, with timeouts, and across a kill -9 of the replying worker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

import streamer
from streamer.replies import CORRELATION_ID, reply_topic
from streamer.worker import Worker
from tests.kafkatools import WorkerProcess, read_all, redone, wait_until_async


def _replier(bootstrap: str, app_id: str, topic: str, guarantee: str) -> streamer.App:
    app = streamer.App(app_id, brokers=bootstrap, processing_guarantee=guarantee,
                       commit_interval=0.2)  # fmt: skip
    requests = app.topic(topic, key_type=str, value_type=int, partitions=3)

    @app.agent(requests, reply_type=int, concurrency=2)
    async def double(stream: streamer.Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            if event.value >= 0:  # negative values get no reply: the asker times out
                yield streamer.Reply(event.value * 2)

    return app


def _cids(bootstrap: str, topic: str, expect: int, isolation: str) -> Counter[bytes]:
    counts: Counter[bytes] = Counter()
    for message in read_all(bootstrap, topic, expect=expect, isolation=isolation, idle=3):
        headers = dict(message.headers() or [])
        counts[headers[CORRELATION_ID]] += 1
    return counts


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_ask_returns_the_agents_reply(
    kafka_bootstrap: str, unique_name, guarantee: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        app = _replier(kafka_bootstrap, unique_name("rr"), unique_name("requests"), guarantee)
        double = app.agents[0]
        worker = Worker(app, handle_signals=False)
        task = asyncio.create_task(worker.run())
        try:
            results = await asyncio.gather(
                *(double.ask(key=f"k{i}", value=i, timeout=180) for i in range(40))
            )
            assert results == [2 * i for i in range(40)]
            with pytest.raises(streamer.RequestTimeout, match="no reply from agent 'double'"):
                await double.ask(key="k", value=-1, timeout=1.5)
            assert isinstance(streamer.RequestTimeout("x"), TimeoutError)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)
            app.replies.close()
        # One committed reply per request: 40 correlation ids, each once (at least once if
        # the worker had to redo work: a session timed out on a busy machine).
        cids = _cids(kafka_bootstrap, reply_topic(app.id), 40, "read_committed")
        assert len(cids) == 40
        if guarantee == "exactly_once" or not redone(caplog.text):
            assert set(cids.values()) == {1}, caplog.text[-3000:]

    with caplog.at_level(logging.WARNING, logger="streamer"):
        asyncio.run(main())


def test_ask_from_inside_an_event_is_refused_in_one_line(kafka_bootstrap: str, unique_name) -> None:
    async def main() -> None:
        app = streamer.App(unique_name("rr-inner"), brokers=kafka_bootstrap, commit_interval=0.2)
        a_topic = app.topic(unique_name("a"), key_type=str, value_type=int, partitions=1)
        b_topic = app.topic(unique_name("b"), key_type=str, value_type=int, partitions=1)
        seen: list[str] = []

        @app.agent(b_topic)
        async def answer(stream: streamer.Stream):  # type: ignore[no-untyped-def]
            async for _event in stream:
                yield streamer.Reply(1)

        @app.agent(a_topic, on_error=streamer.ErrorPolicy(retries=0, on_exhausted="skip"))
        async def asker(stream: streamer.Stream) -> None:
            async for _event in stream:
                try:
                    await answer.ask(key="x", value=1, timeout=1)
                except streamer.StreamerError as exc:
                    seen.append(str(exc))

        worker = Worker(app, handle_signals=False)
        task = asyncio.create_task(worker.run())
        try:
            await a_topic.send(key="x", value=1)
            await wait_until_async(
                lambda: seen, "the inner ask never failed", timeout=60, task=task
            )
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)
        assert "would wait forever" in seen[0] and "\n" not in seen[0]

    asyncio.run(main())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_asks_in_flight_survive_kill_9_of_the_worker(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, guarantee: str
) -> None:
    async def main() -> None:
        env = {
            "STREAMER_BROKERS": kafka_bootstrap,
            "STREAMER_STATE_DIR": str(tmp_path / "state"),
            "STREAMER_COMMIT_INTERVAL": "0.5",
            "TEST_APP_ID": unique_name("rr-kill"),
            "TEST_REQUESTS": create_topic("requests", partitions=3),
            "TEST_PARTITIONS": "3",
            "TEST_GUARANTEE": guarantee,
            "TEST_DELAY": "0.05",
        }
        asker = streamer.App(env["TEST_APP_ID"], brokers=kafka_bootstrap)
        requests = asker.topic(env["TEST_REQUESTS"], key_type=str, value_type=int, partitions=3)

        @asker.agent(requests, reply_type=int)
        async def double(stream: streamer.Stream) -> None:  # the asker's handle on the agent
            raise AssertionError("never run here")

        total = 200
        worker = WorkerProcess("tests.apps.replier", env, tmp_path, "w1", instance="one")
        try:
            asks = [
                asyncio.create_task(double.ask(key=f"k{i % 13}", value=i, timeout=180))
                for i in range(total)
            ]
            # Kill -9 once some replies came back and others are still in flight.
            await wait_until_async(
                lambda: sum(t.done() for t in asks) >= 20,
                lambda: f"fewer than 20 replies\n{worker.log()[-3000:]}",
            )
            assert sum(t.done() for t in asks) < total, "the kill came too late to test anything"
            worker.kill()
            worker = WorkerProcess("tests.apps.replier", env, tmp_path, "w2", instance="one")
            results = await asyncio.gather(*asks)
            assert results == [2 * i for i in range(total)]
            worker.stop()
        finally:
            worker.close()
            asker.replies.close()
        committed = _cids(kafka_bootstrap, reply_topic(env["TEST_APP_ID"]), total, "read_committed")
        assert len(committed) == total
        if guarantee == "exactly_once":
            assert set(committed.values()) == {1}, "a reply committed twice"
            everything = _cids(
                kafka_bootstrap, reply_topic(env["TEST_APP_ID"]), total, "read_uncommitted"
            )
            assert sum(everything.values()) >= total

    asyncio.run(main())
