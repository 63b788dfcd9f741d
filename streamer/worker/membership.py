"""Group membership: joining the consumer group, and joining it again with a fresh consumer
when the old one failed fatally.

A mixin of :class:`streamer.worker.runner.Worker` (like ``rebalance`` and ``stopping``).

librdkafka's only fatal consumer error is a *fenced static member*: another consumer joined
with the same ``group.instance.id``. A worker causes it to itself when the broker goes away
for longer than the session timeout: librdkafka rejoins under the same instance id, and an
answer to a request sent by the previous incarnation fences the new one. The fenced consumer
can do nothing more, yet the worker is healthy, so it gives up every partition without
committing (exactly as if they were lost), aborts the open checkpoint, closes the consumer
and joins again with a new one.

Closing the failed consumer runs on a thread and is waited for at most
:data:`CLOSE_TIMEOUT` seconds: librdkafka's close of a consumer that failed while joining
has been seen never to return, and a worker must not hang on a client it has given up. The
rebalance callbacks that close fires (on that thread) are ignored: only the current
consumer's callbacks act on the worker's partitions.

The new consumer's checkpoint (its producer) starts on a thread for as long as the broker
takes, as after a fencing (``Committer.renew``): the broker that fenced the consumer may
still be loading, and the loop must keep turning. A worker fenced again and again is
sharing its instance id with another process: after :data:`MAX_REJOINS` within
:data:`REJOIN_WINDOW` seconds it stops with one line naming the id.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, TopicPartition

from streamer.errors import KafkaOperationError
from streamer.kafka.backend import Consumer, RebalanceCallback
from streamer.kafka.clients import ConnectionWatch, make_consumer
from streamer.threads import OnThread
from streamer.worker.committer import Committer
from streamer.worker.guarantee import make_checkpoint
from streamer.worker.ordering import ordered
from streamer.worker.stopping import Stopping

if TYPE_CHECKING:
    from streamer.clock import Clock

log = logging.getLogger("streamer.worker")

MAX_REJOINS = 3  # fatal consumer errors survived within REJOIN_WINDOW before stopping
REJOIN_WINDOW = 600.0  # seconds
# Seconds the failed consumer's checkpoint may take to abort and close, and the consumer to close.
CLOSE_TIMEOUT = 5.0


class GroupMembership(Stopping):
    """Join the group; replace a fatally failed consumer (a mixin of Worker)."""

    clock: Clock
    _watch: ConnectionWatch
    _group_overrides: dict[str, Any]
    _rejoins: list[float]
    _group_consumer: Consumer | None  # the consumer whose rebalance callbacks count

    def _join_group(self, overrides: dict[str, Any], replacing: Consumer | None = None) -> None:
        """Subscribe a new consumer to the sources, with its own checkpoint (and producer);
        ``replacing`` is a failed consumer to close once the open checkpoint is aborted."""
        s = self.settings
        self._group_overrides = overrides
        lost_at = self._watch.lost_at  # the Worker starts with a watch of its own
        self._watch = ConnectionWatch()  # logs losing/regaining Kafka; notes a fatal error
        # A consumer replaced while Kafka was away: the new one reports the reconnection.
        self._watch.lost_at = lost_at
        consumer = make_consumer(
            self.backend, s.brokers, self.group_id, overrides, watch=self._watch
        )
        # Event-time order across partitions (streamer.worker.ordering): the pump reads
        # through this wrapper; it is the consumer itself when the app needs no order.
        self._consumer = ordered(consumer, self.app, self.settings, self._states, self.clock)
        new_checkpoint = partial(
            make_checkpoint, self.app.id, s, consumer, self.backend,
            timer=self.metrics.commit_timer, produced=self.metrics.produced_tally,
        )  # fmt: skip
        if self._committer is None:
            # The first start: its producer starts here, with bounded tries, so a worker that
            # cannot reach its broker or is refused says so in one line at start-up.
            self._committer = Committer(new_checkpoint)
        else:
            # A rejoin: the new producer starts on a thread for as long as the broker takes
            # (it was away: that is what fenced the consumer), and the pending rewind waits.
            self._committer.renew(new_checkpoint, CLOSE_TIMEOUT)
        # From here on only the new consumer's rebalance callbacks act on partitions.
        self._group_consumer = consumer
        if replacing is not None:
            self._close_replaced(replacing)
        consumer.subscribe(
            sorted(self._subscribers),
            on_assign=self._current_only(consumer, "assign", self._on_assign),
            on_revoke=self._current_only(consumer, "revoke", self._on_revoke),
            on_lost=self._current_only(consumer, "lost", self._on_lost),
        )

    def _current_only(
        self, consumer: Consumer, kind: str, callback: RebalanceCallback
    ) -> RebalanceCallback:
        """``callback`` (counted as ``kind``), run only while ``consumer`` is the worker's.

        A replaced consumer's close fires its revoke (or lost) callback on the closing
        thread, for partitions the worker gave up already (or, by then, took again through
        the new consumer): acting on it would release the new consumer's partitions, or
        fail its checkpoint, from a thread that is not the event loop's."""
        counted = self.metrics.rebalance_callback(kind, callback)

        def if_current(client: Any, partitions: list[Any]) -> None:
            if self._group_consumer is consumer:
                counted(client, partitions)
            elif partitions:
                log.debug("ignored the %s callback of a replaced consumer", kind)

        return if_current

    def _close_replaced(self, replacing: Consumer) -> None:
        """Close a consumer given up after a fatal error, waiting at most
        :data:`CLOSE_TIMEOUT` seconds; past that it is left behind (its thread and
        connections end with the process), so a close that never returns cannot hang the
        worker."""
        closing = OnThread(replacing.close, "streamer-close-failed-consumer")
        if not closing.join(CLOSE_TIMEOUT):
            log.warning(
                "the failed consumer did not close within %gs; leaving it behind (its "
                "connections close when the process exits) and going on with a new one",
                CLOSE_TIMEOUT,
            )
        elif isinstance(closing.outcome, BaseException):
            log.debug("closing the failed consumer: %s", closing.outcome)

    def _rejoin_after_fatal(self, err: KafkaError) -> bool:
        """The consumer failed fatally with ``err``: give up its partitions uncommitted and
        join again with a new consumer. Returns False (the worker stops, with one line) when
        this keeps happening."""
        reason = _reason(err)
        now = time.monotonic()
        self._rejoins = [t for t in self._rejoins if now - t < REJOIN_WINDOW] + [now]
        instance = self._group_overrides.get("group.instance.id")
        if len(self._rejoins) > MAX_REJOINS:
            shared = (
                f"; another process probably uses group.instance.id {instance!r}: give each "
                "worker its own instance_id"
                if instance
                else ""
            )
            self._fail(KafkaOperationError(
                f"the consumer failed fatally {len(self._rejoins)} times within "
                f"{REJOIN_WINDOW:g}s, last: {reason}{shared}"
            ))  # fmt: skip
            return False
        log.warning(
            "the consumer failed fatally (%s); giving up its partitions uncommitted and "
            "joining the group %r again with a new consumer",
            reason,
            self.group_id,
        )
        owned = [TopicPartition(s.topic, s.partition) for s in self._states.values()]
        self._release_partitions(owned, commit=False)
        self._released.clear()  # outputs of work given up: never into the new checkpoint
        # The committer aborts the open transaction (its outputs were never visible) and
        # builds the next checkpoint for the new consumer; then the old one is closed.
        self._join_group(self._group_overrides, replacing=self._consumer)
        # What the new consumer is assigned starts from the committed offsets once the new
        # checkpoint is ready: the pending rewind does both (and drops what is fetched first).
        self._rewind_pending = True
        self._rewind_not_before = 0.0
        return True


def _reason(err: KafkaError) -> str:
    """librdkafka's text of a fatal consumer error, once: it reads "Fatal error: X: Fatal
    consumer error: X"."""
    return err.str().rsplit("Fatal consumer error: ", 1)[-1]


__all__ = ["MAX_REJOINS", "GroupMembership"]
