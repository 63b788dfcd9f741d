"""A table-table join (``app.table_join``): a table whose rows are maintained from two
topics read as tables, with every change of a row sent to a sink (``on_change``).

Semantics (Kafka Streams' inner ``KTable#join``): each topic is a table (a record sets its
key's value, a tombstone deletes it). When either side of key *k* changes and both sides
have a value, the joined row ``joiner(left, right)`` is stored under *k* and sent to the
sink; when a side is deleted and *k* had a joined row, the row is deleted and a tombstone is
sent. The joined table is read-only for agents (``joined[k]`` inside an agent reading a
co-partitioned topic, or by tools); it changes only with its two topics.

It runs on dispatch and its topics are read by it only, for the same exactly-once reason as
the windowed join (see ``streamer.state.stream_join``). The latest value of each side lives
in a table with a changelog (``<name>-left``/``-right``), the joined rows in ``<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamer.errors import StreamerError
from streamer.state.stream_join import Joiner
from streamer.state.table import Table

if TYPE_CHECKING:
    from streamer._context import TableWrite
    from streamer.state.keyed import KeyedTable, TablePartition
    from streamer.topics import Topic

# What a change sends to the sink: ("row", joined value) or ("delete", None).
Change = tuple[str, Any]


class JoinedTable(Table[Any, Any]):
    """The rows of a table-table join: readable like any table, written by the join only."""

    def _write(self, key: Any, value: bytes | None) -> None:
        raise StreamerError(
            f"table {self.name!r} holds the rows of a table-table join: it changes only with "
            "the two topics it joins"
        )


class TableJoin:
    """The declaration and state of one table-table join; create with
    :meth:`App.table_join`."""

    def __init__(
        self,
        name: str,
        *,
        left: Topic,
        right: Topic,
        sink: Topic | None,
        joiner: Joiner,
        buffers: tuple[Table[Any, Any], Table[Any, Any]],
        result: JoinedTable,
    ) -> None:
        self.name = name
        self.left = left
        self.right = right
        self.sink = sink
        self.joiner = joiner
        self.buffers = buffers  # the latest value of each side: (left, right)
        self.result = result

    def __repr__(self) -> str:
        return f"TableJoin({self.name!r}, {self.left.name!r} x {self.right.name!r})"

    def on_record(
        self,
        topic: str,
        parts: Mapping[KeyedTable[Any, Any], TablePartition],
        key: bytes,
        row_key: bytes,
        value: bytes | None,
        decoded: Any,
    ) -> tuple[list[TableWrite], Change | None]:
        """Apply one record of ``topic`` (``value`` None: a tombstone; ``decoded`` its value
        as the topic's serde reads it) to key ``key`` (raw) whose joined row is stored
        under ``row_key``; return the staged writes and the change of the joined row."""
        is_left = topic == self.left.name
        own_table, other_table = self.buffers if is_left else self.buffers[::-1]
        own, other, rows = parts[own_table], parts[other_table], parts[self.result]
        writes = [own.stage(key, value)]
        other_value = other.read(key)
        if value is not None and other_value is not None:
            theirs = (self.right if is_left else self.left).value_serde.deserialize(other_value)
            row = self.joiner(decoded, theirs) if is_left else self.joiner(theirs, decoded)
            encoded = self.result.value_serde.serialize(row)
            writes.append(rows.stage(row_key, encoded))
            return writes, ("row", row)
        if rows.read(row_key) is not None:  # a side went away: so does the joined row
            writes.append(rows.stage(row_key, None))
            return writes, ("delete", None)
        return writes, None
