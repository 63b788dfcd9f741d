"""How a checkpoint hands outputs to the producer: a suspect record's outputs in requests of
their own, and nothing more once a failed delivery was reported (no Kafka: the order of the
producer calls is what is under test)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from streamer.events import Event
from streamer.worker.checkpoint import ALONE_FLUSH_TIMEOUT, AtLeastOnceCheckpoint
from streamer.worker.partition import Effects


class RecordingProducer:
    """Records produce() and flush() calls in order; ``refuse`` names values whose delivery
    fails with MSG_SIZE_TOO_LARGE when the queue is flushed (as a broker would report)."""

    def __init__(self, refuse: frozenset[bytes] = frozenset()) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = refuse
        self._queued: list[tuple[bytes, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **kw: Any) -> None:
        self.calls.append(("produce", value))
        self._queued.append((value, kw["on_delivery"]))

    def flush(self, timeout: float = -1) -> int:
        self.calls.append(("flush", timeout))
        queued, self._queued = self._queued, []
        for value, callback in queued:
            if value in self.refuse:
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), _Message("out"))
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


class _Message:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def _effects(offset: int, value: bytes, *, alone: bool = False) -> Effects:
    event = Event(None, value, [], 0, "src", 0, offset)
    effects = Effects("agent", event, offset)
    effects.outputs = [("out", None, value, None)]
    effects.alone = alone
    return effects


def _checkpoint(producer: RecordingProducer) -> AtLeastOnceCheckpoint:
    return AtLeastOnceCheckpoint(None, producer, "127.0.0.1:9092")  # type: ignore[arg-type]


def test_a_suspect_records_outputs_go_in_requests_of_their_own() -> None:
    producer = RecordingProducer()
    checkpoint = _checkpoint(producer)
    checkpoint.release([_effects(0, b"a"), _effects(1, b"b", alone=True), _effects(2, b"c")])
    assert producer.calls == [
        ("produce", b"a"),
        ("flush", ALONE_FLUSH_TIMEOUT),  # what came before leaves first
        ("produce", b"b"),
        ("flush", ALONE_FLUSH_TIMEOUT),  # then b, alone
        ("produce", b"c"),
    ]
    assert checkpoint.produced["out"] == 3


def test_nothing_more_is_produced_once_a_delivery_failed() -> None:
    producer = RecordingProducer(refuse=frozenset({b"big"}))
    checkpoint = _checkpoint(producer)
    checkpoint.release([_effects(0, b"a"), _effects(1, b"big", alone=True), _effects(2, b"c")])
    # big was refused when sent alone: c would only be a duplicate after the rewind.
    assert [value for call, value in producer.calls if call == "produce"] == [b"a", b"big"]
    [(effects, err, topic)] = checkpoint.refusals
    assert effects.offset == 1 and err.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert topic == "out"
    timer = Effects(None, None)  # a timer's send: no rewind would run the timer again
    timer.outputs = [("out", None, b"tick", None)]
    checkpoint.release([_effects(3, b"d"), timer])  # later releases of the failed checkpoint
    assert ("produce", b"d") not in producer.calls
    assert ("produce", b"tick") in producer.calls
