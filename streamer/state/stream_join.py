"""A windowed stream-stream join (``app.join``): records of two co-partitioned topics with the
same key and timestamps at most ``within`` apart are paired, each pair emitted once.

Semantics (Kafka Streams' inner ``KStream#join`` with ``JoinWindows``): a left record at
``t`` pairs with every right record of its key stamped in ``[t - within, t + within]``, and
the other way round; the pair is emitted by whichever of the two records is processed
second, as ``joiner(left_value, right_value)``, keyed by the join key. Records with no key
or no value are ignored. Each side is buffered per key in a table with a changelog (see
below), so a pair's two records may be processed by different incarnations of the worker.

Expiry: the join's *stream time* on a partition is the newest timestamp either side brought
(kept in memory: after a restart it starts again from the records seen). A record older
than stream time - ``within`` - ``grace`` is too late: counted, logged, dropped (neither
buffered nor paired). Buffered records that old are dropped when their key is next touched.

Exactly once: the join runs when a record is dispatched (``streamer.worker.inline``), and
its topics are read by the join only (checked at start), so every record completes at once,
in offset order: the buffer write and the pairs of a record always reach the same
checkpoint as (or an earlier one than) anything a later record derived from them. Under
exactly-once, a pair is in the output once, with the offsets that produced it.

Buffer layout (a key's value in RocksDB and the changelog): the key's buffered records in
arrival order, as :func:`streamer.state.versioned.pack` writes them (timestamp ms, value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from streamer.state.versioned import pack, unpack

if TYPE_CHECKING:
    from streamer._context import TableWrite
    from streamer.state.keyed import KeyedTable, TablePartition
    from streamer.state.table import Table
    from streamer.topics import Topic

Joiner = Callable[[Any, Any], Any]


class StreamJoin:
    """The declaration and state of one windowed join; create with :meth:`App.join`."""

    def __init__(
        self,
        name: str,
        *,
        left: Topic,
        right: Topic,
        sink: Topic,
        within: float,
        grace: float,
        joiner: Joiner,
        buffers: tuple[Table[Any, Any], Table[Any, Any]],
    ) -> None:
        self.name = name
        self.left = left
        self.right = right
        self.sink = sink
        self.within_ms = int(within * 1000)
        self.grace_ms = int(grace * 1000)
        self.joiner = joiner
        self.buffers = buffers  # (left records, right records)
        self.stream_time: dict[int, int] = {}  # partition -> newest timestamp seen
        self.late = 0  # records dropped as too late
        self.pairs = 0  # pairs emitted by this worker (metrics, tests)

    def __repr__(self) -> str:
        return f"StreamJoin({self.name!r}, {self.left.name!r} x {self.right.name!r})"

    def on_record(
        self,
        topic: str,
        parts: Mapping[KeyedTable[Any, Any], TablePartition],
        key: bytes,
        value: bytes,
        decoded: Any,
        ts: int,
    ) -> tuple[list[TableWrite], list[tuple[Any, Any]]] | None:
        """Buffer one record of ``topic`` (``value`` encoded, ``decoded`` as the topic's serde
        reads it) and return (staged writes, matched value pairs as (left, right)); None
        when it is too late (dropped). ``parts``: this partition number's table partitions."""
        is_left = topic == self.left.name
        own_table, other_table = self.buffers if is_left else self.buffers[::-1]
        own, other = parts[own_table], parts[other_table]
        partition = own.partition
        now = max(self.stream_time.get(partition, ts), ts)
        self.stream_time[partition] = now
        cutoff = now - self.within_ms - self.grace_ms
        if ts < cutoff:
            self.late += 1
            return None
        writes: list[TableWrite] = []
        others = unpack(other.read(key))
        kept = [entry for entry in others if entry[0] >= cutoff]
        if len(kept) != len(others):
            writes.append(other.stage(key, pack(kept) if kept else None))
        decode_other = (self.right if is_left else self.left).value_serde.deserialize
        pairs: list[tuple[Any, Any]] = []
        mine = decoded
        for other_ts, other_value in kept:
            if abs(other_ts - ts) <= self.within_ms and other_value is not None:
                theirs = decode_other(other_value)
                pairs.append((mine, theirs) if is_left else (theirs, mine))
        buffered = [entry for entry in unpack(own.read(key)) if entry[0] >= cutoff]
        buffered.append((ts, value))
        writes.append(own.stage(key, pack(buffered)))
        self.pairs += len(pairs)
        return writes, pairs
