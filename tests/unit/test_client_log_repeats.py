"""librdkafka's own log lines repeat several times a second while a broker is away (every
failed reconnection, at ERROR): the client logger shows one line of a kind per window and
says how many it held back."""

from __future__ import annotations

import logging

import pytest

from streamer.kafka import clients

LINE = (
    "FAIL [rdkafka#consumer-2] [thrd:127.0.0.1:%d/bootstrap]: 127.0.0.1:%d/bootstrap: Connect "
    "to ipv4#127.0.0.1:%d failed: Connection refused (after %dms in state CONNECT)"
)


def _shown(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streamer.kafka.client"]


def test_a_repeated_client_error_is_shown_once_per_window_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(clients.time, "monotonic", lambda: now[0])
    client_log = logging.getLogger("streamer.kafka.client")
    for f in client_log.filters:
        if isinstance(f, clients._RepeatFilter):
            monkeypatch.setattr(f, "_gate", clients._RepeatGate())
    with caplog.at_level(logging.INFO, logger="streamer.kafka.client"):
        for attempt in range(20):  # the same failure, its numbers varying
            client_log.error(LINE, 14671, 14671, 14671, attempt % 3)
        client_log.info("FAIL [rdkafka#consumer-2]: Disconnected (after 3136ms in state UP)")
        client_log.error("TXNERR [rdkafka#producer-3]: another kind of error")
        assert len(_shown(caplog)) == 3  # one of the twenty, the INFO line, the other kind
        now[0] += clients.REPEAT_WINDOW + 1
        client_log.error(LINE, 14671, 14671, 14671, 0)
    shown = _shown(caplog)
    assert shown[-1].endswith("(19 more like it since it was last shown)")
    assert shown[0].startswith("FAIL [rdkafka#consumer-2]") and "more like it" not in shown[0]


def test_info_lines_of_the_client_are_never_held_back(caplog: pytest.LogCaptureFixture) -> None:
    client_log = logging.getLogger("streamer.kafka.client")
    with caplog.at_level(logging.INFO, logger="streamer.kafka.client"):
        for _ in range(5):
            client_log.info("FAIL [rdkafka#producer-1]: Disconnected (after 10ms in state UP)")
    assert len(_shown(caplog)) == 5
