"""`streamer status`'s live view when a refresh fails: the last view stays, the reason is
shown under it, and the next refresh that succeeds replaces both (only the first snapshot's
failure ends the command)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import streamer
from streamer.cli import main as cli
from streamer.cli import status_cmd
from streamer.errors import KafkaOperationError
from streamer.ops.offsets import PartitionOffsets


class ScriptedGroup:
    """A group whose reads answer, fail, then answer again; Ctrl-C after ``last`` reads."""

    group = "orders-app"

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = script  # the committed offset each read shows, or what it raises

    def __enter__(self) -> ScriptedGroup:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def members(self) -> tuple[str, list[Any]]:
        if not self.script:
            raise KeyboardInterrupt  # the user's Ctrl-C, after the scripted refreshes
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        self.committed = step
        return "STABLE", []

    def show(self, topics: list[str]) -> list[PartitionOffsets]:
        return [PartitionOffsets(topics[0], 0, self.committed, 0, 100)]


def test_a_failed_refresh_keeps_the_view_says_why_and_the_next_one_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = streamer.App("orders-app")

    @app.agent(app.topic("orders", key_type=str, value_type=str))
    async def work(stream: streamer.Stream) -> None:
        async for _event in stream:
            pass

    refused = KafkaOperationError("could not describe group 'orders-app': injected")
    group = ScriptedGroup([10, 20, refused, 30])
    monkeypatch.setattr(status_cmd, "load_cli_app", lambda path: app)
    monkeypatch.setattr(status_cmd, "GroupOffsets", lambda *args: group)

    def leave() -> None:
        raise SystemExit(0)  # the real one leaves the process at once

    monkeypatch.setattr(status_cmd, "_leave", leave)
    result = CliRunner().invoke(cli, ["status", "orders:app", "--interval", "0.1"])

    assert result.exit_code == 0, result.output
    views, view = [], ""  # each view ends with its footer line
    for line in result.output.splitlines(keepends=True):
        view += line
        if line.startswith(("refreshing every", "refresh failed at")):
            views.append(view)
            view = ""
    assert len(views) == 4  # one per snapshot taken, the failed refresh included
    assert "refreshing every 0.1s" in views[1]
    assert "refresh failed at" not in views[1]
    failed = views[2]
    assert (
        "refresh failed at" in failed
        and "could not describe group 'orders-app': injected" in failed
    )
    assert " 20 " in failed and "refreshing every" not in failed  # the last good view stays
    assert " 30 " in views[3] and "refresh failed" not in views[3]  # and the next one replaces it
