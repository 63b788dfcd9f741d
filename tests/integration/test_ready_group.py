"""/ready is group-wide: a worker whose own partitions are all restored is not ready while a
partition of one of the app's source topics (here its repartition topic) is owned by no
member of the group (issue 14, item 8c)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streamer import App, Stream
from streamer.kafka.backend import ConfluentBackend
from streamer.worker import Worker
from tests.kafkatools import wait_until_async

PARTITIONS = 2


class _Withholding:
    """A group consumer that leaves ``topic`` out of its subscription until ``release`` is
    set (as when a topic is missing from the metadata the group assigned from)."""

    def __init__(self, inner: Any, topic: str, release: threading.Event) -> None:
        self.inner = inner
        self._topic = topic
        self._release = release
        self._subscription: tuple[list[str], dict[str, Any]] | None = None

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._subscription = (list(topics), callbacks)
        self.inner.subscribe([t for t in topics if t != self._topic], **callbacks)

    def _catch_up(self) -> None:
        if self._release.is_set() and self._subscription is not None:
            topics, callbacks = self._subscription
            self._subscription = None
            self.inner.subscribe(topics, **callbacks)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        self._catch_up()
        return self.inner.consume(*args, **kwargs)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        self._catch_up()
        return self.inner.poll(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WithholdingBackend(ConfluentBackend):
    def __init__(self, group: str, topic: str, release: threading.Event) -> None:
        self._group, self._topic, self._release = group, topic, release

    def consumer(self, config: dict[str, Any]) -> Any:
        inner = super().consumer(config)
        if config.get("group.id") != self._group:
            return inner
        return _Withholding(inner, self._topic, self._release)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_ready_waits_until_the_repartition_topic_is_assigned(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("ready-in", partitions=PARTITIONS)
    port = _free_port()
    app = App(unique_name("ready"), brokers=kafka_bootstrap, state_dir=tmp_path, web_port=port)
    events = app.topic(src, key_type=str, value_type=dict, partitions=PARTITIONS)
    by_user = events.group_by(lambda event: event.value["user"], name="by-user")
    counts = app.table("counts", default=int, value_type=int)

    @app.agent(by_user)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    release = threading.Event()
    backend = WithholdingBackend(app.group_id, by_user.name, release)
    answers: list[tuple[int, dict[str, Any]]] = []

    async def scenario() -> None:
        worker = Worker(app, handle_signals=False, backend=backend)
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 90
            # The source topic's partitions are owned and ready here; the repartition
            # topic's are owned by nobody: not ready, for as long as that lasts.
            while sum(1 for s, d in answers if d.get("assigned") == PARTITIONS) < 3:
                assert not task.done(), task
                assert time.monotonic() < deadline, answers[-3:]
                answers.append(await asyncio.to_thread(_ready, port))
                await asyncio.sleep(0.4)  # pacing: answers sampled over a while, not a wait
            for status, detail in [a for a in answers if a[1].get("assigned") == PARTITIONS]:
                assert status == 503, detail
                assert "not_ready" not in detail, detail  # every partition here is ready
                # (The source topic's may be listed too while the group's view catches up.)
                withheld = {f"{by_user.name}[{p}]" for p in range(PARTITIONS)}
                assert withheld <= set(detail["unassigned_in_group"]), detail
            release.set()
            last: list[tuple[int, dict[str, Any]]] = []

            async def ready() -> bool:
                last.append(await asyncio.to_thread(_ready, port))
                return last[-1][0] == 200

            await wait_until_async(ready, lambda: f"never ready: {last[-1:]}", task=task)
            assert last[-1][1]["assigned"] == 2 * PARTITIONS
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)

    asyncio.run(scenario())
