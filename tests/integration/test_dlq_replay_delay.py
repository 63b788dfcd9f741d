"""`streamer dlq replay --delay`: dead letters go back through the app's delay topic and
reach their source topic only when due."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time

from tests.kafkatools import read_all, run_cli, run_until


def test_dlq_replay_with_a_delay_goes_through_the_delay_topic(
    kafka_bootstrap: str, create_topic, unique_name, monkeypatch
) -> None:
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": unique_name("dlq-delay"),
        "TEST_SRC": create_topic("src", partitions=2),
        "TEST_OUT": create_topic("out", partitions=2),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("tests.apps.dlq_delay", None)
    module = importlib.import_module("tests.apps.dlq_delay")
    app, source = module.app, module.source
    dlq = app.dead_letter_topic(app.agents[-1])

    async def first_run() -> None:
        for value in (1, 13, 2, 13):
            await source.send(key=f"k{value}", value=value)

    asyncio.run(first_run())
    asyncio.run(run_until(app, lambda: len(read_all(kafka_bootstrap, dlq, expect=2, timeout=2,
                                                    idle=1)) >= 2))  # fmt: skip

    bad = run_cli("dlq", "replay", "tests.apps.dlq_delay", "--agent", "accept", "--delay",
                  "soon", env=env)  # fmt: skip
    assert bad.returncode != 0 and "is not a duration" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    replayed_at = time.time()
    replayed = run_cli("dlq", "replay", "tests.apps.dlq_delay", "--agent", "accept", "--delay",
                       "4s", env=env)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 2 dead letter(s)" in replayed.stdout and "in 4s" in replayed.stdout

    module.FIXED["on"] = True
    outputs: list[int] = []

    def fixed() -> bool:
        outputs[:] = [int(m.value()) for m in read_all(kafka_bootstrap, env["TEST_OUT"],
                                                       expect=4, timeout=2, idle=1)]  # fmt: skip
        return sorted(outputs) == [1, 2, 13, 13]

    asyncio.run(run_until(app, fixed))
    # The replayed records reached the source topic only when due.
    again = [m for m in read_all(kafka_bootstrap, env["TEST_SRC"], expect=6) if m.offset() >= 0]
    late = [m for m in again if int(m.value()) == 13]
    assert len(late) == 4  # the two originals and the two replays
    assert sum(m.timestamp()[1] >= int((replayed_at + 4) * 1000) for m in late) == 2
