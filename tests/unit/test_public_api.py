"""The public surface and the declaration-time errors users meet first."""

from __future__ import annotations

import pytest

import streamer
from streamer import App, ConfigError
from streamer.cli.loader import load_app
from streamer.errors import AppLoadError
from streamer.kafka.backend import ConfluentBackend
from streamer.settings import redact

# The public surface, pinned: adding or removing a name is an API change to make on purpose
# (docs/api.md documents these), never the side effect of a move.
PUBLIC = {
    "Agent",
    "AgentFailed",
    "App",
    "AppLoadError",
    "CommitFailed",
    "ConfigError",
    "ErrorPolicy",
    "Event",
    "KafkaAccessError",
    "KafkaOperationError",
    "KafkaUnavailableError",
    "OutputRefused",
    "ProcessingGuarantee",
    "Record",
    "Reply",
    "RequestTimeout",
    "Serde",
    "SerializationError",
    "Settings",
    "ShutdownIncomplete",
    "Stream",
    "StreamerError",
    "Table",
    "Topic",
    "TopicMismatchError",
    "WindowedTable",
    "avro",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(streamer.__all__) == PUBLIC
    assert len(streamer.__all__) == len(PUBLIC)  # each name once


def test_all_is_explicit_sorted_and_importable() -> None:
    assert streamer.__all__ == sorted(streamer.__all__)
    for name in streamer.__all__:
        assert getattr(streamer, name) is not None


def test_settings_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_BROKERS", "env-host:9092")
    monkeypatch.setenv("STREAMER_COMMIT_INTERVAL", "2.5")
    app = App("shop")
    assert app.settings.brokers == "env-host:9092"
    assert app.settings.effective_commit_interval == 2.5
    assert App("shop", brokers="arg-host:1").settings.brokers == "arg-host:1"
    eos = App("shop", processing_guarantee="exactly_once", commit_interval=None)
    monkeypatch.delenv("STREAMER_COMMIT_INTERVAL")
    assert (
        App("shop", processing_guarantee="exactly_once").settings.effective_commit_interval == 0.1
    )
    assert eos.settings.exactly_once


def test_invalid_settings_name_each_field() -> None:
    with pytest.raises(ConfigError) as info:
        App("shop", commit_interval=-1, lane_buffer="many", processing_guarantee="maybe")
    message = str(info.value)
    assert "commit_interval" in message and "STREAMER_COMMIT_INTERVAL" in message
    assert "lane_buffer" in message and "processing_guarantee" in message
    with pytest.raises(ConfigError, match="colour"):
        App("shop", colour="blue")


def test_secrets_are_masked_in_logged_configs() -> None:
    masked = redact({"sasl.password": "hunter2", "ssl.key.password": "x", "linger.ms": 5})
    assert masked == {"sasl.password": "***", "ssl.key.password": "***", "linger.ms": 5}


def test_declaration_errors() -> None:
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=dict, partitions=3)
    assert app.topic("orders", partitions=3) is orders
    with pytest.raises(ConfigError, match="declared twice"):
        app.topic("orders", partitions=4)

    def not_async(stream):  # type: ignore[no-untyped-def]
        return stream

    with pytest.raises(ConfigError, match="async def"):
        app.agent(orders)(not_async)

    async def no_yield(stream):  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    with pytest.raises(ConfigError, match="never yields"):
        app.agent(orders, sink=[orders])(no_yield)
    with pytest.raises(ConfigError, match="concurrency"):
        app.agent(orders, concurrency=0)(no_yield)
    app.agent(orders)(no_yield)
    with pytest.raises(ConfigError, match="two agents"):
        app.agent(orders)(no_yield)


def test_load_app_errors_are_one_readable_line() -> None:
    with pytest.raises(AppLoadError, match=r"no module named 'apps\.nope'"):
        load_app("apps.nope")
    with pytest.raises(AppLoadError, match="has no attribute 'missing'"):
        load_app("apps.wordcount:missing")
    with pytest.raises(AppLoadError, match=r"not a streamer\.App"):
        load_app("apps.wordcount:lines")
    assert load_app("apps.wordcount").id.endswith("-wordcount")
    assert load_app("apps.orders:app").id.endswith("-orders")


def test_sends_outside_a_worker_follow_the_apps_settings_and_backend() -> None:
    app = App("shop", brokers="first:9092")
    topic = app.topic("orders")
    assert topic.outside.sender.brokers == "first:9092"
    app.settings = app.settings.model_copy(update={"brokers": "second:9092"})  # as --config does
    assert topic.outside.sender.brokers == "second:9092"
    backend = ConfluentBackend()
    app.backend = backend
    assert topic.outside.sender.backend is backend and app.settings.brokers == "second:9092"
