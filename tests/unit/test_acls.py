"""The ACL list of an app, its kafka-acls rendering, and the CLI's client-settings parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer import App, ConfigError, ErrorPolicy, Stream
from streamer.acls import Acl, kafka_acls_commands, required_acls
from streamer.cli.client_config import parse_pairs, read_properties


def _shop(**settings: object) -> App:
    app = App("shop", brokers="memory://acls", **settings)
    orders = app.topic("orders", key_type=str, value_type=dict)
    totals = app.topic("totals", key_type=str, value_type=float)
    app.topic("audit", key_type=str, value_type=str)  # only sent to
    app.table("sums", default=float)

    @app.agent(orders, sink=[totals], on_error=ErrorPolicy(dead_letter_topic="shop-errors"))
    async def total(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            yield event.value

    return app


def test_the_list_is_exactly_what_a_worker_needs() -> None:
    acls = {a.describe() for a in required_acls(_shop(processing_guarantee="exactly_once"))}
    # shop-errors (dead letters) and shop-sums-changelog fall under the prefixed rules.
    assert acls == {
        "Read on Topic:orders",
        "Create on Topic:orders",
        "Write on Topic:totals",
        "Create on Topic:totals",
        "Write on Topic:audit",
        "Create on Topic:audit",
        "Read on Topic:shop-*",
        "Write on Topic:shop-*",
        "Create on Topic:shop-*",
        "Read on Group:shop",
        "Write on TransactionalId:shop-*",
    }  # fmt: skip


def test_at_least_once_without_auto_create_needs_less() -> None:
    acls = {a.describe() for a in required_acls(_shop(topic_auto_create=False))}
    assert not any("TransactionalId" in a for a in acls)
    assert "Create on Topic:orders" not in acls
    assert "Create on Topic:shop-*" in acls  # changelogs are always the app's to create


def test_kafka_acls_commands_group_operations_per_resource() -> None:
    acls = [Acl("Topic", "prefixed", "shop-", "Read"), Acl("Topic", "prefixed", "shop-", "Write"),
            Acl("Group", "literal", "shop", "Read")]  # fmt: skip
    lines = kafka_acls_commands(acls, "User:shop", "k:9092")
    assert lines == [
        "kafka-acls.sh --bootstrap-server k:9092 --add --allow-principal User:shop "
        "--allow-host '*' --operation Read --operation Write --topic shop- "
        "--resource-pattern-type prefixed",
        "kafka-acls.sh --bootstrap-server k:9092 --add --allow-principal User:shop "
        "--allow-host '*' --operation Read --group shop",
    ]


def test_properties_files_read_as_java_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# a comment\n! another\n\nsecurity.protocol=SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\n"
        "sasl.username alice\nsasl.password = p=ss:word\n"
    )
    assert read_properties(path) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "p=ss:word",
    }


def test_malformed_settings_are_refused_without_quoting_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pairs(("linger.ms=5", "hunter2"))
    assert "hunter2" not in str(info.value) and "KEY=VALUE" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read --command-config"):
        read_properties(tmp_path / "missing.properties")
    assert parse_pairs(("a=1", "b=x=y")) == {"a": "1", "b": "x=y"}
