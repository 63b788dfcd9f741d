"""Sender's contract: a send returns once the record is stored, and raises only once it is
known not to be (the producer settled it); a slow ack is waited for, never given up on
while the record may still be stored."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamer.errors import KafkaOperationError
from streamer.kafka.sender import ACK_TIMEOUT, Sender


class SlowProducer:
    """Holds each record for ``slow`` flushes (a busy broker), then settles it, reporting
    ``error`` to the delivery callback if one is scripted."""

    def __init__(self, slow: int, error: KafkaError | None = None) -> None:
        self.slow, self.error = slow, error
        self.flushes = 0
        self.queued: list[Any] = []

    def produce(self, topic: str, *, on_delivery: Any, **_: Any) -> None:
        self.queued.append(on_delivery)

    def flush(self, timeout: float = -1) -> int:
        self.flushes += 1
        if self.flushes > self.slow and self.queued:
            callback = self.queued.pop()
            if self.error is not None:
                callback(self.error, None)
        return len(self.queued)


class OneProducer:
    def __init__(self, producer: SlowProducer) -> None:
        self.made = producer
        self.configs: list[dict[str, Any]] = []

    def producer(self, config: dict[str, Any]) -> SlowProducer:
        self.configs.append(config)
        return self.made


def test_a_slow_ack_is_waited_for_and_a_settled_failure_is_raised() -> None:
    backend = OneProducer(SlowProducer(slow=5))
    Sender(backend, "k1:9092", {}).send("orders", b"k", b"v", None)  # type: ignore[arg-type]
    assert backend.made.flushes == 6  # kept flushing until the record was stored
    assert backend.configs[0]["message.timeout.ms"] == int(ACK_TIMEOUT * 1000)

    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
    backend = OneProducer(SlowProducer(slow=2, error=timed_out))
    sender = Sender(backend, "k1:9092", {"delivery.timeout.ms": 5000})  # type: ignore[arg-type]
    with pytest.raises(KafkaOperationError) as raised:
        sender.send("orders", b"k", b"v", None)
    assert str(raised.value) == "could not send to 'orders' via k1:9092: Local: Message timed out"
    assert "message.timeout.ms" not in backend.configs[0]  # the user's own timeout is kept
