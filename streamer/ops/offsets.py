"""Consumer-group offset tools: what a group has committed, and moving it (issue 6).

:class:`GroupOffsets` works on a group id and the topics it is given, never on an App: it reads
the committed offset, the watermarks and the lag of every partition, plans a reset (to an
offset, a time, a shift, the earliest or the latest record) and applies it. A plan is
validated completely before anything is written, so a bad partition or an out-of-range offset
changes nothing. Applying refuses while the group has
active members: the broker would overwrite (or reject) offsets a running worker still commits.

Every user mistake is a :class:`~streamer.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from pydantic import TypeAdapter, ValidationError
from pytimeparse.timeparse import timeparse

from streamer.errors import ConfigError, KafkaOperationError
from streamer.kafka.admin import partition_counts
from streamer.kafka.backend import Backend, Consumer
from streamer.kafka.clients import connect_admin, is_transient, kafka_error, make_consumer
from streamer.settings import Settings

if TYPE_CHECKING:
    from streamer.app import App

T = TypeVar("T")

log = logging.getLogger("streamer.offsets")

TIMEOUT = 10.0
# How long a tool keeps asking while the broker answers "not now" (a group coordinator
# moving or loading its partition after a restart, a request timed out on a busy machine):
# a restarted broker loads its internal topics before any group request succeeds.
PATIENCE = 60.0
_BACKOFF = (0.1, 1.0)  # first and longest pause between two asks
# States in which the group is consuming (or about to), even if no member is listed.
_BUSY_STATES = (
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
)
_REBALANCING = {
    ConsumerGroupState.PREPARING_REBALANCING.name,
    ConsumerGroupState.COMPLETING_REBALANCING.name,
}
# How long a reset waits for a group caught in a rebalance to settle (see ensure_idle):
# past the 10 s session timeout streamer's workers use, with room for a loaded broker.
SETTLE_WAIT = 30.0
SETTLE_POLL = 0.5


class _Unconfirmed(Exception):
    """An offset commit whose answer did not come in time: it may or may not have landed."""


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition as the group sees it. ``committed`` is None when the group never
    committed there; ``low``/``end`` are the first and next-to-be-written offsets the app's
    consumer can read (``end`` is the last stable offset under read_committed)."""

    topic: str
    partition: int
    committed: int | None
    low: int
    end: int

    @property
    def lag(self) -> int | None:
        """Records the group has yet to process; None without a committed offset."""
        return None if self.committed is None else max(self.end - self.committed, 0)


@dataclass(frozen=True)
class GroupMember:
    """One member of a consumer group and the partitions it owns, as (topic, partition)."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OffsetChange:
    """A planned move of one partition's committed offset from ``old`` to ``new``."""

    topic: str
    partition: int
    old: int | None
    new: int


ResetKind = Literal["offset", "datetime", "shift", "earliest", "latest"]


@dataclass(frozen=True)
class ResetTarget:
    """Where to move offsets: ``value`` is the offset (``offset``), the shift (``shift``),
    the UTC datetime (``datetime``), or None (``earliest``/``latest``)."""

    kind: ResetKind
    value: int | datetime | None = None

    def describe(self) -> str:
        if isinstance(self.value, datetime):
            return f"{self.kind} {_iso(self.value)}"
        return self.kind if self.value is None else f"{self.kind} {self.value}"


def _iso(moment: datetime) -> str:
    """ISO 8601 to the millisecond Kafka timestamps have, without zeros that say nothing."""
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def parse_datetime(text: str) -> datetime:
    """ISO 8601 (``2024-05-01T12:00:00Z``, ``...+02:00``, a date alone); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{text!r} is not an ISO 8601 datetime (for example 2024-05-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_TIMEDELTA = TypeAdapter(timedelta)


def parse_duration(text: str) -> timedelta:
    """``1h``, ``90m``, ``2d12h``, ``1.5h``, ``30s`` (pytimeparse) or ISO 8601 ``PT1H``,
    ``P1DT2H`` (pydantic); must be > 0."""
    text = text.strip()
    seconds = timeparse(text)
    duration: timedelta | None = None if seconds is None else timedelta(seconds=seconds)
    if duration is None and text.upper().startswith("P"):
        with contextlib.suppress(ValidationError):
            duration = _TIMEDELTA.validate_python(text)
    if duration is None:
        raise ConfigError(f"{text!r} is not a duration (for example 1h, 30m, 2d12h or PT1H)")
    if duration <= timedelta(0):
        raise ConfigError(f"duration {text!r} must be longer than zero")
    return duration


def source_topics(app: App) -> list[str]:
    """The topics the app's agents read, sorted, each once."""
    return sorted({topic.name for agent in app.agents for topic in agent.topics})


def _one_line(exc: KafkaException) -> str:
    """The Kafka error's own text with its code's name: librdkafka leaves the text empty
    for some broker answers ("ConsumerGroupDescribe: "), and the name is what users search."""
    err = kafka_error(exc)
    if err is None:
        return str(exc)
    text = err.str().strip().rstrip(":")
    return f"{text} ({err.name()})" if text else err.name()


def _asking_again(read: Callable[[], T], what: str, *, brokers: str = "Kafka") -> T:
    """``read()``, asked again with a growing pause for up to ``PATIENCE`` seconds while
    the broker answers with a transient error or lets the call time out; then, or at once
    for any other Kafka error, KafkaOperationError saying ``what`` could not be done."""
    deadline = time.monotonic() + PATIENCE
    pause = _BACKOFF[0]
    while True:
        try:
            return read()
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise KafkaOperationError(f"could not {what}: {_one_line(exc)}") from exc
        except TimeoutError as exc:  # an admin future's own result(timeout)
            if time.monotonic() >= deadline:
                raise KafkaOperationError(
                    f"could not {what}: {brokers} did not answer within {PATIENCE:g}s"
                ) from exc
        time.sleep(pause)
        pause = min(pause * 2, _BACKOFF[1])


class GroupOffsets:
    """Offsets of consumer group ``group``, with clients from ``backend`` configured by
    ``settings`` (brokers, Kafka properties). Use as a context manager (it holds clients).

    The consumer shares the group id but never subscribes, so it never joins the group: it
    only reads committed offsets and watermarks and looks offsets up by time.
    """

    def __init__(self, group: str, settings: Settings, backend: Backend) -> None:
        self.group = group
        self._brokers = settings.brokers
        self._admin = connect_admin(
            backend, settings.brokers, dict(settings.kafka_config), settings.connect_timeout
        )
        self._consumer = make_consumer(
            backend,
            settings.brokers,
            self.group,
            {**settings.kafka_config, **settings.consumer_config, "enable.auto.commit": False},
        )

    def __enter__(self) -> GroupOffsets:
        return self

    @property
    def consumer(self) -> Consumer:
        """The group's non-member consumer (for offset look-ups by time)."""
        return self._consumer

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    # -- reading -----------------------------------------------------------------------------

    def partition_counts(self) -> dict[str, int]:
        """Partition count of every topic in the cluster (a full listing: asking for one
        topic by name could auto-create it on brokers that allow that)."""
        return partition_counts(self._admin, TIMEOUT, brokers=self._brokers)

    def show(self, topics: list[str]) -> list[PartitionOffsets]:
        """Committed offset, watermarks and lag of every partition of ``topics`` that exist."""
        counts = self.partition_counts()
        wanted = [TopicPartition(t, p) for t in topics if t in counts for p in range(counts[t])]
        return self._read(wanted)

    def _read(self, partitions: list[TopicPartition]) -> list[PartitionOffsets]:
        if not partitions:
            return []
        result = _asking_again(
            lambda: self._read_once(partitions), f"read offsets of group {self.group!r}"
        )
        return sorted(result, key=lambda po: (po.topic, po.partition))

    def _read_once(self, partitions: list[TopicPartition]) -> list[PartitionOffsets]:
        committed = self._consumer.committed(partitions, timeout=TIMEOUT)
        result = []
        for tp in committed:
            if tp.error is not None:
                raise KafkaOperationError(
                    f"could not read the committed offset of {tp.topic}[{tp.partition}] "
                    f"for group {self.group!r}: {tp.error.str()}"
                )
            low, end = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=TIMEOUT
            )
            offset = tp.offset if tp.offset >= 0 else None
            result.append(PartitionOffsets(tp.topic, tp.partition, offset, low, end))
        return result

    # -- resetting ---------------------------------------------------------------------------

    def plan(
        self, topic: str, partitions: list[int] | None, target: ResetTarget
    ) -> list[OffsetChange]:
        """The changes a reset of ``topic`` (all partitions, or ``partitions``) would make.

        Raises ConfigError, changing nothing, for an unknown topic or partition, a shift of a
        partition without a committed offset, a time after the last record, or any new offset
        outside [low watermark, end].
        """
        count = self.partition_counts().get(topic)
        if count is None:
            raise ConfigError(f"topic {topic!r} does not exist in the cluster")
        chosen = sorted(set(partitions)) if partitions else list(range(count))
        unknown = [p for p in chosen if not 0 <= p < count]
        if unknown:
            raise ConfigError(
                f"topic {topic!r} has {count} partition(s) (0..{count - 1}); "
                f"no partition {', '.join(map(str, unknown))}"
            )
        current = self._read([TopicPartition(topic, p) for p in chosen])
        targets = self._targets(current, target)
        changes = []
        for po in current:
            new = targets[po.partition]
            if not po.low <= new <= po.end:
                raise ConfigError(
                    f"offset {new} for {topic}[{po.partition}] is outside the retained range "
                    f"{po.low}..{po.end}; nothing was changed"
                )
            changes.append(OffsetChange(topic, po.partition, po.committed, new))
        return changes

    def _targets(self, current: list[PartitionOffsets], target: ResetTarget) -> dict[int, int]:
        value = target.value
        if target.kind == "earliest":
            return {po.partition: po.low for po in current}
        if target.kind == "latest":
            return {po.partition: po.end for po in current}
        if target.kind == "offset" and isinstance(value, int):
            return {po.partition: value for po in current}
        if target.kind == "shift" and isinstance(value, int):
            missing = [po for po in current if po.committed is None]
            if missing:
                first = missing[0]
                raise ConfigError(
                    f"group {self.group!r} has no committed offset on {first.topic}"
                    f"[{first.partition}] to shift; use --to-offset, --to-datetime or --to-earliest"
                )
            return {po.partition: (po.committed or 0) + value for po in current}
        if target.kind == "datetime" and isinstance(value, datetime):
            return self._offsets_at(current, value)
        raise ValueError(f"invalid reset target {target!r}")  # a programming error

    def _offsets_at(self, current: list[PartitionOffsets], moment: datetime) -> dict[int, int]:
        millis = int(moment.timestamp() * 1000)
        query = [TopicPartition(po.topic, po.partition, millis) for po in current]
        found = _asking_again(
            lambda: self._consumer.offsets_for_times(query, timeout=TIMEOUT),
            "look up offsets by time",
        )
        result = {}
        for tp in found:
            if tp.error is not None:
                raise KafkaOperationError(
                    f"could not look up {tp.topic}[{tp.partition}] at {_iso(moment)}: "
                    f"{tp.error.str()}"
                )
            if tp.offset < 0:  # -1: every record is older than the requested time
                raise ConfigError(
                    f"{tp.topic}[{tp.partition}] has no record at or after "
                    f"{_iso(moment)}; use --to-latest to skip everything"
                )
            result[tp.partition] = tp.offset
        return result

    def _describe(self) -> Any:
        """The group's ConsumerGroupDescription, or None when the group does not exist."""

        def describe() -> Any:
            future = self._admin.describe_consumer_groups([self.group], request_timeout=TIMEOUT)
            try:
                return future[self.group].result(TIMEOUT)
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is not None and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                    return None
                raise

        return _asking_again(
            describe, f"describe group {self.group!r}", brokers=f"Kafka at {self._brokers}"
        )

    def members(self) -> tuple[str, list[GroupMember]]:
        """The group's state name and its members with their assignments, sorted by member
        id (("NONE", []) when the group does not exist)."""
        description = self._describe()
        if description is None:
            return "NONE", []
        state = description.state.name if description.state is not None else "UNKNOWN"
        members = [
            GroupMember(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                instance_id=m.group_instance_id,
                assignment=tuple(
                    sorted(
                        (tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions if m.assignment else None) or []
                    )
                ),
            )
            for m in description.members or []
        ]
        return state, sorted(members, key=lambda m: m.member_id)

    def active_members(self) -> tuple[str, int]:
        """The group's state name and its member count (("NONE", 0) if it does not exist)."""
        description = self._describe()
        if description is None:
            return "NONE", 0
        members = len(description.members or [])
        if description.state in _BUSY_STATES:
            # A rebalancing group may momentarily list no members; it is still in use.
            members = max(members, 1)
        state = description.state.name if description.state is not None else "UNKNOWN"
        return state, members

    def ensure_idle(self, settle: float | None = None) -> None:
        """Raise ConfigError when the group has active members.

        A group caught in a rebalance (preparing or completing one) is asked again for up to
        ``settle`` seconds (default :data:`SETTLE_WAIT`) before that: workers that were
        just stopped can leave it mid-rebalance, and the broker drops such members once
        their rebalance or session times out. A stable group with members is refused at
        once: its workers are running."""
        deadline = time.monotonic() + (SETTLE_WAIT if settle is None else settle)
        state, members = self.active_members()
        said = False
        while members and state in _REBALANCING and time.monotonic() < deadline:
            if not said:
                log.info(
                    "consumer group %r is rebalancing (state %s, %d member(s)); waiting up "
                    "to %.0fs for it to settle", self.group, state, members,
                    deadline - time.monotonic(),
                )  # fmt: skip
                said = True
            time.sleep(SETTLE_POLL)
            state, members = self.active_members()
        if members:
            raise ConfigError(
                f"consumer group {self.group!r} has {members} active member(s) (state "
                f"{state}); stop the app's workers, then reset"
            )

    def apply(self, changes: list[OffsetChange]) -> None:
        """Commit ``changes`` for the group (refused while it has active members)."""
        self.ensure_idle()
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(c.topic, c.partition, c.new) for c in changes]
        )

        def alter() -> Any:  # setting the same offsets again is harmless: asked again
            future = self._admin.alter_consumer_group_offsets([request])[self.group]
            try:
                return future.result(TIMEOUT)
            except TimeoutError as exc:  # not known to be committed: not asked again
                raise _Unconfirmed from exc

        try:
            result = _asking_again(alter, f"commit offsets for group {self.group!r}")
        except _Unconfirmed as exc:  # not known to be committed: the user runs it again
            raise KafkaOperationError(
                f"could not commit offsets for group {self.group!r}: Kafka at {self._brokers} "
                f"did not confirm within {TIMEOUT:g}s; check with `streamer offsets show` and "
                "run the reset again"
            ) from exc
        failed = [tp for tp in result.topic_partitions or [] if tp.error is not None]
        if failed:
            tp = failed[0]
            raise KafkaOperationError(
                f"could not commit {tp.topic}[{tp.partition}] for group {self.group!r}: "
                f"{tp.error.str()}"
            )

    def existing(self, topics: Iterable[str]) -> list[str]:
        """Those of ``topics`` that exist in the cluster, in the given order."""
        counts = self.partition_counts()
        return [name for name in topics if name in counts]

    def delete_topics(self, topics: Iterable[str]) -> list[str]:
        """Delete those of ``topics`` that exist (a group's changelogs); returns their names.

        Waits until they leave the metadata, so a worker started next recreates them empty.
        """
        names = self.existing(topics)
        if not names:
            return []
        try:
            for future in self._admin.delete_topics(names, operation_timeout=30).values():
                future.result(30)
        except KafkaException as exc:
            raise KafkaOperationError(f"could not delete topics {names}: {_one_line(exc)}") from exc
        except TimeoutError as exc:
            raise KafkaOperationError(
                f"could not delete topics {names}: Kafka at {self._brokers} did not confirm "
                "within 30s"
            ) from exc
        deadline = time.monotonic() + 30
        while set(names) & set(self.partition_counts()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return names
