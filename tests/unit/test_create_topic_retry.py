"""The create_topic fixture's creation asks again while the broker cannot take a topic yet
(a scripted admin client: a fenced single broker cannot be produced on cue)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from streamer.errors import KafkaOperationError
from streamer.testing.pytest_plugin import _create_topic

FENCED = KafkaError(
    KafkaError.INVALID_REPLICATION_FACTOR,
    "Unable to replicate the partition 1 time(s): All brokers are currently fenced.",
)


class ScriptedAdmin:
    """Answers each create_topics call with the next outcome: None (created) or an error."""

    def __init__(self, outcomes: list[KafkaError | None]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def create_topics(self, topics: list[NewTopic], **_: Any) -> dict[str, Future[None]]:
        self.calls += 1
        future: Future[None] = Future()
        outcome = self.outcomes.pop(0)
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaException(outcome))
        return {topics[0].topic: future}


def test_a_fenced_broker_is_asked_again_until_it_takes_the_topic() -> None:
    admin = ScriptedAdmin([FENCED, FENCED, None])
    _create_topic(admin, NewTopic("t", num_partitions=1), timeout=30)
    assert admin.calls == 3


def test_a_topic_an_unanswered_try_created_counts_as_created() -> None:
    timed_out = KafkaError(KafkaError._TIMED_OUT, "Failed while waiting for controller")
    admin = ScriptedAdmin([timed_out, KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "exists")])
    _create_topic(admin, NewTopic("t", num_partitions=1), timeout=30)
    assert admin.calls == 2


def test_an_error_retrying_cannot_fix_fails_at_once_naming_the_topic() -> None:
    admin = ScriptedAdmin([KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "exists")])
    with pytest.raises(KafkaOperationError, match="could not create topic t:"):
        _create_topic(admin, NewTopic("t", num_partitions=1), timeout=30)
    assert admin.calls == 1


def test_a_broker_fenced_past_the_deadline_fails_naming_the_reason() -> None:
    admin = ScriptedAdmin([FENCED] * 2)
    with pytest.raises(KafkaOperationError, match="All brokers are currently fenced"):
        _create_topic(admin, NewTopic("t", num_partitions=1), timeout=0)
    assert admin.calls == 1
