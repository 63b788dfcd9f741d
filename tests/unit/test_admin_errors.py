"""Topic administration when the broker answers badly: transient metadata failures are
asked again, a creation the broker never confirms and a failure nobody worded each end in
one line naming what failed (never a raw client exception)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException

from streamer.cli.base import StreamerGroup
from streamer.errors import ConfigError, KafkaOperationError, KafkaUnavailableError
from streamer.kafka import admin as admin_module
from streamer.kafka.admin import TopicSpec, ensure_topics, partition_counts


def _failure(code: int) -> KafkaException:
    return KafkaException(KafkaError(code, "injected"))


class FlakyAdmin:
    """``list_topics`` raises the scripted errors first, then answers with ``topics``;
    ``create_topics`` hands out futures that never complete."""

    def __init__(self, errors: list[KafkaException], topics: dict[str, int]) -> None:
        self.errors = errors
        self.topics = topics
        self.calls = 0

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n)))
                for name, n in self.topics.items()
            }
        )

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, Future[Any]]:
        return {topic.topic: Future() for topic in new_topics}


def test_transient_metadata_failures_are_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_module.time, "sleep", lambda _: None)
    admin = FlakyAdmin([_failure(KafkaError._TRANSPORT), _failure(KafkaError._TIMED_OUT)],
                       {"orders": 4})  # fmt: skip
    assert partition_counts(admin, brokers="k1:9092") == {"orders": 4}
    assert admin.calls == 3


def test_a_broker_that_stops_answering_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_module, "METADATA_DEADLINE", 0.0)
    admin = FlakyAdmin([_failure(KafkaError._TRANSPORT)] * 3, {})
    with pytest.raises(KafkaUnavailableError, match=r"^Kafka at k1:9092 stopped answering"):
        partition_counts(admin, brokers="k1:9092")


def test_other_metadata_failures_are_one_line_at_once() -> None:
    admin = FlakyAdmin([_failure(KafkaError.CLUSTER_AUTHORIZATION_FAILED)], {})
    with pytest.raises(KafkaOperationError, match="could not list the topics at k1:9092"):
        partition_counts(admin, brokers="k1:9092")
    assert admin.calls == 1


def test_a_creation_the_broker_never_confirms_names_the_topic() -> None:
    admin = FlakyAdmin([], {})
    with pytest.raises(KafkaOperationError) as raised:
        ensure_topics(admin, [TopicSpec("orders", 4)], auto_create=True, default_replication=1,
                      timeout=0.05, brokers="k1:9092")  # fmt: skip
    assert str(raised.value) == (
        "could not create topic 'orders': Kafka at k1:9092 did not confirm it within 0s"
    )


def test_a_creation_confirmed_late_is_a_creation() -> None:
    """A busy broker created the topic but did not answer in time: the topic exists, so
    the creation succeeded (seen under load: workers failed to start over it)."""

    class LateAdmin(FlakyAdmin):
        def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, Future[Any]]:
            self.topics.update({topic.topic: topic.num_partitions for topic in new_topics})
            return super().create_topics(new_topics, **kwargs)

    admin = LateAdmin([], {})
    counts = ensure_topics(admin, [TopicSpec("orders", 4)], auto_create=True,
                           default_replication=1, timeout=0.05, brokers="k1:9092")  # fmt: skip
    assert counts == {"orders": 4}


def test_an_unworded_kafka_failure_is_one_line_on_the_command_line() -> None:
    @click.group(cls=StreamerGroup)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def cli(ctx: click.Context, debug: bool) -> None:
        ctx.meta["streamer.debug"] = debug

    @cli.command()
    def fails() -> None:
        raise _failure(KafkaError._TRANSPORT)

    result = CliRunner().invoke(cli, ["fails"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: a Kafka request failed: injected (--debug shows where)"
    ]
    debug = CliRunner().invoke(cli, ["--debug", "fails"])
    assert isinstance(debug.exception, KafkaException)  # the traceback, for bug reports


def test_offset_reads_are_asked_again_through_a_busy_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.ops import offsets
    from streamer.ops.offsets import _asking_again

    # A coordinator moving answers NOT_COORDINATOR with no text (seen after a restart).
    failures = [_failure(KafkaError._TIMED_OUT), KafkaException(KafkaError(16, ""))] * 3

    def read() -> str:
        if failures:
            raise failures.pop()
        return "offsets"

    assert _asking_again(read, "read offsets") == "offsets"
    assert not failures

    def always_busy() -> str:
        raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "ConsumerGroupDescribe: "))

    monkeypatch.setattr(offsets, "PATIENCE", 0.5)  # then it gives up, naming the error
    with pytest.raises(
        KafkaOperationError,
        match=r"^could not read offsets: ConsumerGroupDescribe \(NOT_COORDINATOR\)$",
    ):
        _asking_again(always_busy, "read offsets")

    calls = []

    def refused() -> str:
        calls.append(1)
        raise _failure(KafkaError.GROUP_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaOperationError):
        _asking_again(refused, "read offsets")
    assert len(calls) == 1  # not a transient error: not asked again


class SlowGroupAdmin:
    """``describe_consumer_groups`` hands out futures that time out ``slow`` times (as the
    admin future's own ``result(timeout)`` does on a busy broker), then one that answers."""

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self.calls = 0

    def describe_consumer_groups(self, groups: list[str], **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        future: Future[Any] = Future()
        if self.calls > self.slow:
            future.set_result(SimpleNamespace(state=None, members=[]))
        return {groups[0]: SlowFuture(future)}


class SlowFuture:
    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(0)  # raises TimeoutError unless it answered


def test_a_group_description_the_broker_lets_time_out_is_asked_again_then_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.ops import offsets
    from streamer.ops.offsets import GroupOffsets

    group = GroupOffsets.__new__(GroupOffsets)  # the admin client only: no broker needed
    group.group, group._brokers = "orders", "k1:9092"
    group._admin = SlowGroupAdmin(slow=3)  # type: ignore[assignment]
    assert group.active_members() == ("UNKNOWN", 0)
    monkeypatch.setattr(offsets, "PATIENCE", 0.5)
    group._admin = SlowGroupAdmin(slow=1000)  # type: ignore[assignment]
    with pytest.raises(KafkaOperationError) as raised:
        group.ensure_idle()
    message = str(raised.value)
    assert "\n" not in message and "k1:9092" in message and "'orders'" in message


def _group_reporting(answers: list[tuple[str, int]]) -> tuple[Any, list[tuple[str, int]]]:
    """A GroupOffsets whose describe answers are ``answers`` in turn (the last one repeats);
    returns it and the list of answers it gave."""
    from streamer.ops.offsets import GroupOffsets

    group = GroupOffsets.__new__(GroupOffsets)
    group.group, group._brokers = "orders", "k1:9092"
    given: list[tuple[str, int]] = []

    def active_members() -> tuple[str, int]:
        given.append(answers[min(len(given), len(answers) - 1)])
        return given[-1]

    group.active_members = active_members  # type: ignore[method-assign]
    return group, given


def test_a_reset_waits_for_a_group_left_mid_rebalance_to_empty(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamer.ops import offsets

    monkeypatch.setattr(offsets, "SETTLE_POLL", 0.01)
    group, given = _group_reporting(
        [("COMPLETING_REBALANCING", 1), ("PREPARING_REBALANCING", 1), ("EMPTY", 0)]
    )
    with caplog.at_level("INFO", logger="streamer.offsets"):
        group.ensure_idle()
    assert given[-1] == ("EMPTY", 0) and len(given) == 3
    assert "is rebalancing (state COMPLETING_REBALANCING, 1 member(s))" in caplog.text


def test_a_reset_is_refused_at_once_while_workers_run() -> None:
    group, given = _group_reporting([("STABLE", 2)])
    with pytest.raises(ConfigError, match=r"has 2 active member\(s\) \(state STABLE\)"):
        group.ensure_idle()
    assert len(given) == 1  # a stable group with members is not waited for


def test_a_group_that_stays_in_a_rebalance_is_refused_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.ops import offsets

    monkeypatch.setattr(offsets, "SETTLE_POLL", 0.01)
    group, given = _group_reporting([("PREPARING_REBALANCING", 1)])
    with pytest.raises(ConfigError, match="state PREPARING_REBALANCING"):
        group.ensure_idle(settle=0.05)
    assert len(given) > 1  # asked again meanwhile
