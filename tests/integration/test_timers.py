"""Timers on real worker processes: they run at their interval, survive their own failures,
and an on_leader timer runs on exactly one of two workers."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streamer import App, ConfigError
from tests.kafkatools import WorkerProcess, group_settled, paced, read_all, wait_until


def test_interval_and_leader_timers(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("timers"),
        "TEST_SRC": create_topic("src", partitions=4),
        "TEST_TICKS": create_topic("ticks", partitions=1),
    }
    workers = [
        WorkerProcess("tests.apps.timers", {**env, "TEST_INSTANCE": name}, tmp_path, name)
        for name in ("a", "b")
    ]

    def ticked_since(start: float) -> bool:
        ticks = Counter(
            value["worker"]
            for m in read_all(kafka_bootstrap, env["TEST_TICKS"], idle=0.5, timeout=5)
            if m.key() == b"tick" and (value := json.loads(m.value()))["at"] > start
        )
        return all(ticks[name] >= 12 for name in ("a", "b"))

    try:
        wait_until(group_settled(kafka_bootstrap, env["TEST_APP_ID"], 2), "2 workers joined",
                   workers=workers)  # fmt: skip
        settled = time.time()
        # Each worker ticked enough times since to measure its interval (the failing timer
        # of the app runs all along).
        wait_until(
            paced(lambda: ticked_since(settled), every=1.0),
            "too few ticks",
            workers=workers,
        )
        assert all(worker.alive() for worker in workers)  # the failing timer harmed nothing
        stopping = time.time()  # stopping the first worker moves the leadership: ignore it
    finally:
        for worker in workers:
            worker.terminate()
            worker.close()
    ticks: dict[str, list[float]] = defaultdict(list)
    leader: list[tuple[float, str]] = []
    for message in read_all(kafka_bootstrap, env["TEST_TICKS"], idle=2):
        value = json.loads(message.value())
        if message.key() == b"tick":
            ticks[value["worker"]].append(value["at"])
        else:
            leader.append((value["at"], value["worker"]))
    for name in ("a", "b"):
        gaps = [b - a for a, b in itertools.pairwise(ticks[name])]
        assert len(gaps) >= 10, ticks
        # Never faster than the interval (0.3 s, less scheduling jitter); a busy machine
        # may make it slower, so no upper bound.
        assert sorted(gaps)[len(gaps) // 2] > 0.25
    # Leadership may move while the group forms, but never runs on both at once: the leader
    # changes at most twice, and the last seconds come from one worker only.
    leader.sort()
    changes = sum(1 for (_, a), (_, b) in itertools.pairwise(leader) if a != b)
    assert changes <= 2, leader
    assert len({worker for at, worker in leader if stopping - 3 < at < stopping}) == 1
    assert "this timer always fails" in workers[0].log()


def test_timer_declarations_are_checked() -> None:
    app = App("timers")

    def not_async() -> None:
        pass

    with pytest.raises(ConfigError, match="async def"):
        app.timer(1)(not_async)  # type: ignore[arg-type]

    async def fine() -> None:
        pass

    with pytest.raises(ConfigError, match="interval must be > 0"):
        app.timer(0)(fine)
    with pytest.raises(ConfigError, match="not a cron expression"):
        app.crontab("every tuesday")(fine)
    with pytest.raises(ConfigError, match="unknown timezone"):
        app.crontab("*/5 * * * *", timezone="Mars/Olympus")(fine)
    app.crontab("*/5 * * * *", timezone="Europe/Paris")(fine)
    assert 0 <= app.timers[-1].next_delay() <= 300
