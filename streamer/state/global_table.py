"""GlobalTable: a table every worker holds whole, built from a topic (Kafka Streams'
``GlobalKTable``, Faust's ``GlobalTable``), for lookups by any key, such as a foreign key.

The topic is the table: its records' keys and latest values (a tombstone deletes). Each
worker keeps one local RocksDB store per partition of the topic, restored from the topic
(``read_committed``) from the offset stored with the store to the end before any of its
partitions starts processing, then kept up to date while it runs
(``streamer.worker.global_tables``). Nothing of it is committed to the group: its position
lives with the local store, so a restart resumes where the store stands.

As in Kafka Streams, lookups are not synchronised with the stream's time: an event sees the
table as it stands on this worker when the event is processed (a stream-table join through
``app.table_from`` reads as of the event's timestamp instead). The table is read-only: it
changes only with its topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from streamer.errors import SerializationError, StreamerError
from streamer.serde import Serde
from streamer.state.store import PartitionStore


class GlobalTable:
    """Read-only, dict-like, the whole content of ``topic`` on every worker. Create with
    :meth:`App.global_table`. Reads raise StreamerError while the worker has not restored
    it (no worker running in this process, or still starting)."""

    def __init__(
        self,
        name: str,
        *,
        topic: str,
        key_serde: Serde,
        value_serde: Serde,
        default: Callable[[], Any] | None,
    ) -> None:
        self.name = name
        self.topic = topic
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.default = default
        # Partition -> its local store, set by the worker (empty while none runs here).
        self.stores: dict[int, PartitionStore] = {}
        self.restored = False  # every partition restored to the end seen at start
        self.applied = 0  # records applied since the restore (while running)

    def __repr__(self) -> str:
        return f"GlobalTable({self.name!r}, from {self.topic!r})"

    def _key(self, key: Any) -> bytes:
        try:
            data = self.key_serde.serialize(key)
        except SerializationError as exc:
            raise SerializationError(f"global table {self.name!r}: key {exc}") from exc
        if data is None:
            raise SerializationError(f"global table {self.name!r}: key must not be None")
        return data

    def _stores(self) -> list[PartitionStore]:
        if not self.restored:
            raise StreamerError(
                f"global table {self.name!r} is not restored on this worker (read it from "
                "an agent, or while a worker runs)"
            )
        return list(self.stores.values())

    def _read(self, key: Any) -> bytes | None:
        data = self._key(key)
        # The producer's partitioner is unknown here (the topic may be written by any
        # client): look in every partition; a key lives in one.
        for store in self._stores():
            value = store.get(data)
            if value is not None:
                return value
        return None

    def __getitem__(self, key: Any) -> Any:
        data = self._read(key)
        if data is None:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return self.value_serde.deserialize(data)

    def get(self, key: Any, default: Any = None) -> Any:
        data = self._read(key)
        return default if data is None else self.value_serde.deserialize(data)

    def __contains__(self, key: Any) -> bool:
        return self._read(key) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        raise StreamerError(
            f"global table {self.name!r} is built from topic {self.topic!r}: it changes only "
            "with that topic (send to it instead)"
        )

    def __delitem__(self, key: Any) -> None:
        self.__setitem__(key, None)

    def items(self) -> Iterator[tuple[Any, Any]]:
        for store in self._stores():
            for key, value in store.items():
                yield self.key_serde.deserialize(key), self.value_serde.deserialize(value)

    def keys(self) -> Iterator[Any]:
        return (key for key, _ in self.items())

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    def as_dict(self) -> dict[Any, Any]:
        return dict(self.items())
