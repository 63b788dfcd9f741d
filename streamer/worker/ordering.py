"""Event-time ordering of consumed records across the partitions that feed one stream time,
in the manner of Kafka Streams' ``PartitionGroup`` and ``max.task.idle.ms``.

Why: a worker fetches each partition at its own pace. After a stop, the backlog of one
partition can be handed out (and, through a ``group_by``, forwarded into a repartition topic)
long before the same minutes of another partition; the stream time of the windows
downstream then jumps ahead of events still in flight, and those events are dropped as
late although the live run would have kept them.

What: :class:`OrderedConsumer` stands between the worker's pump and its Kafka consumer (the
pump's only change is that it gets this object instead of the consumer). Records of the
topics that feed one stream time (a *group*: the topics some agent reads together, all their
assigned partitions) are held per partition and handed out lowest time first:

- Each partition's *time* is the running maximum of its records' timestamps, so a record
  is never moved ahead of an earlier offset of its partition (offset order is the runtime's
  contract), and one out-of-order record does not pull its partition ahead.
- Records up to the *horizon* are released: the smallest, over the group's partitions, of
  the newest time each has buffered. A partition with nothing buffered holds the horizon
  at its time (nothing newer of the others goes out) unless it is *caught up* (its fetch
  position has reached its high watermark: nothing is coming) or it has been empty for
  ``event_order_wait`` seconds (then stream time may pass it; a bounded wait, as
  ``max.task.idle.ms`` when the lag is not known).
- A partition *re-reading* records this consumer already fetched once (sought back by a
  rewind after a failed checkpoint) holds the horizon without a time limit until it is back
  where it had been: those records are known to exist, so passing them would hand the
  others' records out ahead of them (a join would miss the table rows they carry). This is
  Kafka Streams' rule for a partition whose lag is known (KIP-695), with the lag taken from
  what was fetched rather than the high watermark, which under read_committed may sit
  above what can ever be read while another producer's transaction is open.
- One call hands out at most :data:`SPAN_MS` of event time. The pump hands each call's
  records to the lanes and lets them run before the next call, and lanes of different
  partitions run one after the other; a small span bounds how far their outputs (e.g. a
  repartition topic's records) can be out of time order.

Memory stays bounded: a partition holding ``lane_buffer`` records here is paused, and
resumed once half of them are handed out. Records held here are not in flight: the commit
position never passes them, and a rewind or revoke drops them (they are fetched again).

Scope: one worker orders what it owns. Partitions owned by different workers are not
ordered against each other; nor are records a remote producer writes late. Grace covers
those (docs/windows.md).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamer.kafka.backend import Consumer, Message

if TYPE_CHECKING:
    from streamer.app import App
    from streamer.clock import Clock
    from streamer.settings import Settings

log = logging.getLogger("streamer.worker")

SPAN_MS = 100  # event time handed out per call at most (see the module docstring)
_NONE = -(2**63)  # the time of a partition before its first record

Where = tuple[str, int]
Entry = tuple[int, Message]


class _Queue:
    """The records of one partition held here, with its time and idle bookkeeping."""

    __slots__ = ("empty_since", "items", "owner", "paused", "run", "time")

    def __init__(self, owner: object) -> None:
        self.owner = owner  # the worker's PartitionState the records were fetched for
        self.items: deque[Entry] = deque()
        self.run = _NONE  # running maximum timestamp of the records added
        self.time = _NONE  # running maximum of the records handed out
        self.empty_since: float | None = None
        self.paused = False  # paused here (too many records held)


def topic_groups(app: App) -> dict[str, int]:
    """Topic name -> group number: topics read by one agent share a group (a union over
    the agents' topic sets)."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for agent in app.agents:
        names = [topic.name for topic in agent.topics]
        for name in names:
            parent[find(name)] = find(names[0])
    # A table built from a topic is read by the app's other agents as of their events'
    # time, and joins pair by time: their topics and the agents' feed one stream time.
    if app.joins or any(table.source_topic for table in app.tables.values()):
        joined = [t.name for a in app.agents if not a.internal or a.table for t in a.topics]
        for name in joined:
            parent[find(name)] = find(joined[0])
    roots = sorted({find(name) for name in parent})
    return {name: roots.index(find(name)) for name in parent}


def ordered(
    consumer: Consumer,
    app: App,
    settings: Settings,
    states: Mapping[Where, Any],
    clock: Clock,
) -> Consumer:
    """``consumer`` wrapped in an :class:`OrderedConsumer` when the app needs event-time
    order (it declares a windowed table, a table built from a topic or a join, and the
    worker's ``settings`` turn ``event_order`` on); else ``consumer``."""
    needs = any(t.windowed or t.source_topic for t in app.tables.values()) or bool(app.joins)
    if not settings.event_order or not needs:
        return consumer
    wrapped = OrderedConsumer(
        consumer, topic_groups(app), states, settings.event_order_wait,
        settings.lane_buffer, clock,
    )  # fmt: skip
    return cast(Consumer, wrapped)  # the same surface: every other call goes through


class OrderedConsumer:
    """A consumer whose ``consume`` and ``poll`` return records in event-time order across
    each group's partitions (see the module docstring); every other call goes to the
    wrapped consumer, ``seek`` also drops what is held for that partition.

    ``states`` is the worker's live map of owned partitions (read only): a partition not in
    it, or owned by another state object than the one its records were fetched for (a
    revoke, a rewind), has its held records dropped.
    """

    def __init__(
        self,
        consumer: Consumer,
        groups: dict[str, int],
        states: Mapping[Where, Any],
        wait: float,
        limit: int,
        clock: Clock,
    ) -> None:
        self.inner = consumer
        self._groups = groups
        self._states = states
        self._wait = wait
        self._limit = limit
        self._clock = clock
        self._queues: dict[Where, _Queue] = {}
        # Per partition: the offset its next record will have (from the records added, or a
        # seek), and the owner (the worker's state) with the furthest offset fetched for it,
        # to know when it re-reads. A seek (a rewind) carries the furthest over to the new
        # owner; an assignment without one starts afresh (another worker may have moved on).
        self._next: dict[Where, int] = {}
        self._reached: dict[Where, tuple[object, int]] = {}
        self._ready: deque[Message] = deque()  # released, in order, not yet returned
        self.held = 0  # records held (for tests and metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- the consumer surface the pump uses ----------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        waiting = bool(self._ready) or self.held > 0
        out = self._add(list(self.inner.consume(num_messages, 0 if waiting else timeout)))
        return out + self._take(num_messages - len(out))

    def poll(self, timeout: float | None = None) -> Message | None:
        if not self._ready:
            self._release()
        if not self._ready:
            wait = timeout if timeout is not None else -1
            if self.held and self._wait >= 0:
                wait = min(wait, self._wait) if wait >= 0 else self._wait
            message = self.inner.poll(wait)
            if message is not None:
                passed = self._add([message])
                if passed:
                    return passed[0]
        taken = self._take(1)
        return taken[0] if taken else None

    def seek(self, partition: TopicPartition) -> None:
        where: Where = (partition.topic, partition.partition)
        self._drop(where)
        reached = self._reached.get(where)
        if reached is not None:
            self._reached[where] = (self._states.get(where), reached[1])
        if partition.offset >= 0:
            self._next[where] = partition.offset
        elif partition.offset == OFFSET_BEGINNING:
            self._next[where] = 0  # whatever the log starts at is below where it had been
        else:
            self._next.pop(where, None)
        self.inner.seek(partition)

    # -- holding and releasing -----------------------------------------------------------------

    def _add(self, messages: list[Message]) -> list[Message]:
        """Hold the records of grouped topics; return the rest (errors, other topics) to be
        handed out at once."""
        passed: list[Message] = []
        queues, groups, states = self._queues, self._groups, self._states
        last: Where | None = None
        queue: _Queue | None = None
        fetched: set[Where] = set()
        for message in messages:
            topic = message.topic()
            if message.error() is not None or topic not in groups:
                passed.append(message)
                continue
            where: Where = (topic, message.partition())  # type: ignore[assignment]
            if where != last:
                last = where
                fetched.add(where)
                owner = states.get(where)
                queue = queues.get(where)
                if queue is None or queue.owner is not owner:
                    if queue is not None:
                        self._drop(where)
                    queue = queues[where] = _Queue(owner)
            assert queue is not None
            stamp = message.timestamp()[1]
            if stamp > queue.run:
                queue.run = stamp
            queue.items.append((queue.run, message))
            queue.empty_since = None
            self.held += 1
        if fetched:
            self._note_fetched(fetched)
        self._pause_full()
        return passed

    def _note_fetched(self, fetched: set[Where]) -> None:
        """After records of the ``fetched`` partitions were added: where each has got to."""
        for where in fetched:
            queue = self._queues[where]
            following = cast(int, queue.items[-1][1].offset()) + 1
            self._next[where] = following
            reached = self._reached.get(where)
            if reached is None or reached[0] is not queue.owner or following > reached[1]:
                self._reached[where] = (queue.owner, following)

    def _take(self, count: int) -> list[Message]:
        if count <= 0:
            return []
        if not self._ready:
            self._release()
        ready = self._ready
        if len(ready) <= count:
            out = list(ready)
            ready.clear()
        else:
            out = [ready.popleft() for _ in range(count)]
        return out

    def _release(self) -> None:
        """Move the next span of each group's records, lowest time first, to ``_ready``."""
        if not self.held:
            return
        members: dict[int, list[Where]] = {}
        for where, owner in list(self._states.items()):
            group = self._groups.get(where[0])
            if group is None:
                continue
            members.setdefault(group, []).append(where)
            queue = self._queues.get(where)
            if queue is not None and queue.owner is not owner:
                self._drop(where)
        for where in [w for w in self._queues if w not in self._states]:
            self._drop(where)  # revoked: fetched again by its next owner
        now = self._clock.monotonic()
        for group in sorted(members):
            self._release_group(members[group], now)
        self._resume_drained()

    def _release_group(self, wheres: list[Where], now: float) -> None:
        queues = self._queues
        horizon = head = 2**63
        empty: list[tuple[Where, _Queue]] = []
        for where in wheres:
            queue = queues.get(where)
            if queue is None:
                queue = queues[where] = _Queue(self._states.get(where))
            if queue.items:
                horizon = min(horizon, queue.items[-1][0])
                head = min(head, queue.items[0][0])
            else:
                empty.append((where, queue))
        if head == 2**63:
            return  # nothing held in this group
        for blocking in self._blocking(empty, now):
            horizon = min(horizon, blocking.time)
        if horizon < head:
            return  # waiting for a partition that has nothing buffered
        limit = min(horizon, head + SPAN_MS)
        chunk: list[Entry] = []
        for where in wheres:
            items = queues[where].items
            taken = 0
            while items and items[0][0] <= limit:
                chunk.append(items.popleft())
                taken += 1
            if taken:
                queues[where].time = chunk[-1][0]
                self.held -= taken
        chunk.sort(key=itemgetter(0))  # stable: each partition's records keep their order
        self._ready.extend(entry[1] for entry in chunk)

    def _blocking(self, empty: list[tuple[Where, _Queue]], now: float) -> list[_Queue]:
        """The empty partitions stream time must wait for: re-reading what it fetched before
        (however long that takes), or not caught up and empty for less than the wait."""
        candidates: list[tuple[Where, _Queue, bool]] = []
        for where, queue in empty:
            reached = self._reached.get(where)
            rereading = (
                reached is not None
                and reached[0] is self._states.get(where)
                and self._next.get(where, 0) < reached[1]
            )
            if not rereading:
                if queue.empty_since is None:
                    queue.empty_since = now
                if self._wait >= 0 and now - queue.empty_since >= self._wait:
                    continue  # waited long enough: stream time may pass it
            candidates.append((where, queue, rereading))
        if not candidates:
            return []
        tps = [TopicPartition(topic, partition) for (topic, partition), _, _ in candidates]
        try:
            positions = self.inner.position(tps)
        except Exception:  # the consumer is closing: nothing is known, nothing waits
            return []
        blocking = []
        for (where, queue, rereading), tp in zip(candidates, positions, strict=True):
            if rereading:
                # Until its records come again; or its fetch position passed where it had
                # been without any (records deleted since): then nothing more is known.
                if tp.offset < self._reached[where][1]:
                    blocking.append(queue)
                continue
            _, high = self.inner.get_watermark_offsets(TopicPartition(*where), cached=True)
            if tp.offset >= 0 and high >= 0 and tp.offset >= high:
                continue  # caught up: nothing is coming
            blocking.append(queue)
        return blocking

    # -- bookkeeping -----------------------------------------------------------------------------

    def _drop(self, where: Where) -> None:
        queue = self._queues.pop(where, None)
        if queue is None:
            return
        self.held -= len(queue.items)
        if self._ready:  # released but not handed out: the same fate
            kept = [m for m in self._ready if (m.topic(), m.partition()) != where]
            self._ready = deque(kept)

    def _pause_full(self) -> None:
        """Pause partitions holding ``lane_buffer`` records here. The worker's ``paused``
        flag (also set when lanes are full) is shared: a partition already paused is left
        alone; one the lanes' resume resumed is paused again here if still full."""
        full = []
        for where, queue in self._queues.items():
            if len(queue.items) >= self._limit:
                state = self._states.get(where)
                if state is not None and not state.paused:
                    state.paused = queue.paused = True
                    full.append(TopicPartition(*where))
        if full:
            self.inner.pause(full)

    def _resume_drained(self) -> None:
        """Resume partitions paused here once half their records are handed out (unless
        their lanes are full: then the lanes resume them when drained)."""
        drained = []
        for where, queue in self._queues.items():
            if queue.paused and len(queue.items) <= self._limit // 2:
                queue.paused = False
                state = self._states.get(where)
                if state is not None and state.paused and state.buffered <= self._limit // 2:
                    state.paused = False
                    drained.append(TopicPartition(*where))
        if drained:
            self.inner.resume(drained)
