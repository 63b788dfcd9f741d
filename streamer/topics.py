"""Topic: a name, its serdes and its shape; the one place records are encoded.

Sends from agent code are *staged* with the event being processed and released only when
that event and every earlier offset of its partition are complete (DESIGN §2 rule 2).
Sends from outside a worker (scripts, the CLI) go straight to Kafka and are awaited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from streamer._context import current_lane
from streamer.clock import current_clock
from streamer.delays import delay_headers, delay_topic, due_millis
from streamer.errors import ConfigError, SerializationError
from streamer.events import Headers
from streamer.kafka.admin import TopicSpec
from streamer.serde import Serde

if TYPE_CHECKING:
    from streamer.app import App


class Topic:
    """A declared Kafka topic. Create with :meth:`App.topic`, not directly."""

    __slots__ = ("_app", "config", "key_serde", "name", "partitions", "replication", "value_serde")

    def __init__(
        self,
        app: App,
        name: str,
        *,
        key_serde: Serde,
        value_serde: Serde,
        partitions: int | None,
        replication: int | None,
        config: dict[str, str],
    ) -> None:
        self._app = app
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitions = partitions
        self.replication = replication
        self.config = config

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, key={self.key_serde.name}, value={self.value_serde.name})"

    @property
    def app(self) -> App:
        """The app that declared this topic."""
        return self._app

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
        return self._app.group_by(self, key, name=name, key_type=key_type)

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
            if not self._app.settings.delayed_delivery:
                raise ConfigError(
                    f"send(delay=/deliver_at=) to {self.name!r}: app {self._app.id!r} has no "
                    "delay topic; create the app with App(..., delayed_delivery=True)"
                )
            due = due_millis(deliver_at, delay, current_clock.get().time())
            headers = delay_headers(headers, due, self.name)
            target = delay_topic(self._app.id)
        lane = current_lane.get()
        if lane is not None:
            lane.stage(target, key_bytes, value_bytes, headers)
            return
        await asyncio.get_running_loop().run_in_executor(
            None, self._app.send_now, target, key_bytes, value_bytes, headers
        )
