"""Sender's contract: a send returns once the record is stored, and raises only once it is
known not to be (the producer settled it); a slow ack is waited for, never given up on
while the record may still be stored."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamer.errors import KafkaOperationError
from streamer.kafka.sender import ACK_TIMEOUT, Sender


class SlowProducer:
    """Holds each record for ``slow`` polls (a busy broker), then reports it: stored, or
    ``error`` if one is scripted. Fails the test if two threads serve it at once."""

    def __init__(self, slow: int, error: KafkaError | None = None) -> None:
        self.slow, self.error = slow, error
        self.polls = 0
        self.queued: list[Any] = []
        self.serving = threading.Lock()

    def produce(self, topic: str, *, on_delivery: Any, **_: Any) -> None:
        self.queued.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        assert self.serving.acquire(blocking=False), "two threads polled the producer at once"
        try:
            self.polls += 1
            if self.polls > self.slow and self.queued:
                self.queued.pop(0)(self.error, None)
                return 1
            return 0
        finally:
            self.serving.release()


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
    assert backend.made.polls == 6  # kept serving reports until the record was stored
    config = backend.configs[0]
    assert config["message.timeout.ms"] == int(ACK_TIMEOUT * 1000)
    assert config["delivery.report.only.error"] is False  # each send waits for its own

    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
    backend = OneProducer(SlowProducer(slow=2, error=timed_out))
    sender = Sender(backend, "k1:9092", {"delivery.timeout.ms": 5000})  # type: ignore[arg-type]
    with pytest.raises(KafkaOperationError) as raised:
        sender.send("orders", b"k", b"v", None)
    assert str(raised.value) == "could not send to 'orders' via k1:9092: Local: Message timed out"
    assert "message.timeout.ms" not in backend.configs[0]  # the user's own timeout is kept


def test_sends_from_many_threads_each_wait_for_their_own_record_one_poller_at_a_time() -> None:
    backend = OneProducer(SlowProducer(slow=3))
    sender = Sender(backend, "k1:9092", {})  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(sender.send, "orders", b"k", b"v", None) for _ in range(40)]:
            future.result()  # raises if a poll overlapped another or a send gave up
    assert not backend.made.queued  # every record was reported to its sender
