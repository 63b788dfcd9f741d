"""Sender: producing encoded records outside any worker (scripts, the CLI, ``ask()``).

Inside a worker, records are staged with the event being processed and produced by the
worker's committer; nothing here is used for them. A Sender builds its producer on first
use and reuses it; each :meth:`Sender.send` waits for the broker's ack, so a returned call
means the record is stored.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from streamer.errors import KafkaOperationError
from streamer.events import Headers
from streamer.kafka.backend import Backend, Producer
from streamer.kafka.clients import make_producer

ACK_TIMEOUT = 30.0  # seconds send() waits for the broker's ack


class Sender:
    """Produces records to ``brokers`` through ``backend``, one acknowledged send at a time.

    Thread-safe: ``send`` is blocking and is meant to run in an executor thread. ``config``
    is the producer's configuration on top of streamer's defaults.
    """

    def __init__(self, backend: Backend, brokers: str, config: Mapping[str, Any]) -> None:
        self.backend = backend
        self.brokers = brokers
        self._config = dict(config)
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Sender({self.brokers!r}, {self.backend!r})"

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Produce one encoded record and wait for its ack; KafkaOperationError when the
        broker refuses it or gives no ack within 30 s."""
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self.backend, self.brokers, self._config)
            producer = self._producer
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        remaining = producer.flush(ACK_TIMEOUT)
        if remaining or failures:
            reason = failures[0] if failures else f"no ack within {ACK_TIMEOUT:g}s"
            raise KafkaOperationError(f"could not send to {topic!r} via {self.brokers}: {reason}")

    def close(self, timeout: float = 5.0) -> None:
        """Finish what the producer holds (within ``timeout`` s) and drop it; a later
        ``send`` builds a new one."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(timeout)
