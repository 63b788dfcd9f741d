"""Topic: a name, its serdes and its shape; the one place records are encoded.

Sends from agent code are *staged* with the event being processed and released only when
that event and every earlier offset of its partition are complete (DESIGN §2 rule 2).
Sends from outside a worker (scripts, the CLI) go straight to Kafka through the app's
:class:`~streamer.outside.Outside` and are awaited. A Topic does not know its App: what it
needs of it (its outside clients, whether it has a delay topic, how to declare a re-keyed
topic) is handed to it when declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from streamer._context import current_lane
from streamer.clock import current_clock
from streamer.delays import delay_headers, due_millis
from streamer.errors import ConfigError, SerializationError
from streamer.events import Headers
from streamer.kafka.admin import TopicSpec
from streamer.outside import Outside, active
from streamer.serde import Serde


class Regrouper(Protocol):
    """Declares the repartition topic of :meth:`Topic.group_by` (the App that declared the
    topic is one)."""

    def group_by(
        self, topic: Topic, key: Callable[[Any], Any], *, name: str, key_type: object = str
    ) -> Topic: ...


class Topic:
    """A declared Kafka topic. Create with :meth:`App.topic`, not directly."""

    __slots__ = (
        "_delay_topic",
        "_outside",
        "_regrouper",
        "config",
        "key_serde",
        "name",
        "partitions",
        "replication",
        "value_serde",
    )

    def __init__(
        self,
        name: str,
        *,
        key_serde: Serde,
        value_serde: Serde,
        partitions: int | None,
        replication: int | None,
        config: dict[str, str],
        outside: Outside,
        delay_topic: str | None = None,
        regrouper: Regrouper | None = None,
    ) -> None:
        self._outside = outside  # sends outside a worker
        self._delay_topic = delay_topic  # where send(delay=...) goes; None: no delays
        self._regrouper = regrouper  # declares group_by's topic
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitions = partitions
        self.replication = replication
        self.config = config

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, key={self.key_serde.name}, value={self.value_serde.name})"

    @property
    def outside(self) -> Outside:
        """The clients sends outside a worker go through, in this context (see
        :func:`streamer.outside.redirect`)."""
        return active(self._outside)

    @property
    def spec(self) -> TopicSpec:
        return TopicSpec(self.name, self.partitions, self.replication, dict(self.config))

    def encode_key(self, key: Any) -> bytes | None:
        try:
            return self.key_serde.serialize(key)
        except SerializationError as exc:
            raise SerializationError(f"topic {self.name!r}: key {exc}") from exc

    def encode_value(self, value: Any) -> bytes | None:
        try:
            return self.value_serde.serialize(value)
        except SerializationError as exc:
            raise SerializationError(f"topic {self.name!r}: value {exc}") from exc

    def decode_key(self, data: bytes | None) -> Any:
        try:
            return self.key_serde.deserialize(data)
        except SerializationError as exc:
            raise SerializationError(f"topic {self.name!r}: key {exc}") from exc

    def decode_value(self, data: bytes | None) -> Any:
        try:
            return self.value_serde.deserialize(data)
        except SerializationError as exc:
            raise SerializationError(f"topic {self.name!r}: value {exc}") from exc

    def group_by(self, key: Any, *, name: str, key_type: object = str) -> Topic:
        """Re-key this topic by ``key(event)``: see :meth:`App.group_by`."""
        if self._regrouper is None:
            raise ConfigError(f"topic {self.name!r} was not declared by an App: use app.group_by")
        return self._regrouper.group_by(self, key, name=name, key_type=key_type)

    async def send(
        self,
        *,
        key: Any = None,
        value: Any = None,
        headers: Headers | None = None,
        deliver_at: datetime | None = None,
        delay: timedelta | None = None,
    ) -> None:
        """Send one record to this topic.

        Inside an agent the record is staged with the current event and reaches Kafka when
        that event is complete (with exactly-once, in the same transaction as its offset).
        Outside a worker it is produced at once and this waits for the broker's ack.
        A value that does not fit the topic's serde raises SerializationError here, at once.

        With ``deliver_at`` (a datetime; naive means UTC) or ``delay`` (a timedelta) the
        record goes to the app's delay topic and a worker delivers it here when due
        (``App(delayed_delivery=True)``; see :mod:`streamer.delays`).
        """
        key_bytes = self.encode_key(key)
        value_bytes = self.encode_value(value)
        target = self.name
        if deliver_at is not None or delay is not None:
            if self._delay_topic is None:
                raise ConfigError(
                    f"send(delay=/deliver_at=) to {self.name!r}: app "
                    f"{self._outside.app_id!r} has no delay topic; create the app with "
                    "App(..., delayed_delivery=True)"
                )
            due = due_millis(deliver_at, delay, current_clock.get().time())
            headers = delay_headers(headers, due, self.name)
            target = self._delay_topic
        lane = current_lane.get()
        if lane is not None:
            lane.stage(target, key_bytes, value_bytes, headers)
            return
        sender = self.outside.sender
        await asyncio.get_running_loop().run_in_executor(
            None, sender.send, target, key_bytes, value_bytes, headers
        )
