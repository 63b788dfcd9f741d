"""Sender: producing encoded records outside any worker (scripts, the CLI, ``ask()``).

Inside a worker, records are staged with the event being processed and produced by the
worker's committer; nothing here is used for them. A Sender builds its producer on first
use and reuses it; each :meth:`Sender.send` waits for the broker's ack, so a returned call
means the record is stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from streamer.errors import KafkaOperationError
from streamer.events import Headers
from streamer.kafka.backend import Backend, Producer
from streamer.kafka.clients import make_producer

# Seconds a record may take to be acknowledged (the producer's message.timeout.ms unless
# configured): a busy or restarting broker can take a minute. send() waits for the record's
# own delivery report, never less, so a failed send is known not to be stored: giving up
# earlier would leave a record still queued that may be stored after the error was raised.
ACK_TIMEOUT = 120.0
_TIMEOUT_KEYS = ("message.timeout.ms", "delivery.timeout.ms")  # the second is an alias
POLL = 0.2  # seconds of one turn serving delivery reports


class Sender:
    """Produces records to ``brokers`` through ``backend``, one acknowledged send at a time.

    Thread-safe: ``send`` is blocking and is meant to run in an executor thread. ``config``
    is the producer's configuration on top of streamer's defaults.
    """

    def __init__(self, backend: Backend, brokers: str, config: Mapping[str, Any]) -> None:
        self.backend = backend
        self.brokers = brokers
        self._config = dict(config)
        given = [self._config[key] for key in _TIMEOUT_KEYS if key in self._config]
        if not given:
            self._config["message.timeout.ms"] = int(ACK_TIMEOUT * 1000)
        # The producer settles every record (stored, or failed) by its message timeout; the
        # margin only guards against a client that never does.
        self._settle_within = (float(given[0]) / 1000 if given else ACK_TIMEOUT) + 30.0
        # Every record's delivery is reported, so each send waits for its own.
        self._config["delivery.report.only.error"] = False
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._serving = threading.Lock()  # held by the one thread serving delivery reports

    def __repr__(self) -> str:
        return f"Sender({self.brokers!r}, {self.backend!r})"

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Produce one encoded record and wait for its delivery report; KafkaOperationError
        when the broker refuses it or it was not acknowledged within the producer's message
        timeout (:data:`ACK_TIMEOUT` by default): then it is known not to be stored."""
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self.backend, self.brokers, self._config)
            producer = self._producer
        settled: list[Any] = []  # the record's delivery error, or None once it is stored

        def on_delivery(err: Any, _msg: Any) -> None:
            settled.append(err)

        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        # One thread at a time serves the reports of every waiting send (librdkafka aborted
        # the process when several threads flushed one producer at once), in short polls: a
        # Ctrl-C in the CLI, and the other senders' turns, come between them.
        deadline = time.monotonic() + self._settle_within
        while not settled and time.monotonic() < deadline:
            if self._serving.acquire(timeout=POLL):
                try:
                    producer.poll(POLL)
                finally:
                    self._serving.release()
        err = settled[0] if settled else "the producer never settled the record"
        if err is not None:
            reason = err.str() if isinstance(err, KafkaError) else str(err)
            raise KafkaOperationError(f"could not send to {topic!r} via {self.brokers}: {reason}")

    def close(self, timeout: float = 5.0) -> None:
        """Finish what the producer holds (within ``timeout`` s) and drop it; a later
        ``send`` builds a new one."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with self._serving:  # not while a send serves reports on it
                producer.flush(timeout)
