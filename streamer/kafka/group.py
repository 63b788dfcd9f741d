"""What the consumer group as a whole owns: the view ``/ready`` needs (issue 14).

A worker that restored all its own partitions is not serving the app if some partition of
a source topic (a repartition topic, say, that was not in the metadata when the group
assigned) is owned by no member at all. :class:`GroupAssignment` asks the group coordinator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from streamer.kafka.backend import Admin

REFRESH_INTERVAL = 1.0  # seconds between two descriptions of the group
DESCRIBE_TIMEOUT = 5.0  # seconds a description may take


class GroupAssignment:
    """Which partitions of the app's source topics no member of its consumer group owns, as
    the group coordinator says (``describe_consumer_groups``).

    :meth:`unassigned` asks the broker at most once per :data:`REFRESH_INTERVAL` and answers
    from a cache in between. It blocks for up to :data:`DESCRIBE_TIMEOUT` seconds when it
    asks: call it from the web server's thread, never from the worker's loop.
    """

    def __init__(self, admin: Admin, group: str, partitions: Mapping[str, int]) -> None:
        self._admin = admin
        self._group = group
        self._wanted = {(t, p) for t, count in partitions.items() for p in range(count)}
        self._lock = threading.Lock()
        self._checked = -REFRESH_INTERVAL
        self._unassigned: list[str] = [_label(t, p) for t, p in sorted(self._wanted)]
        self.error: str | None = None  # why the last look failed, if it did

    def unassigned(self) -> list[str]:
        """``topic[partition]`` of every source partition no member owns (all of them while
        the group cannot be described)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= REFRESH_INTERVAL:
                self._checked = now
                self._unassigned = self._look()
            return list(self._unassigned)

    def _look(self) -> list[str]:
        try:
            future = self._admin.describe_consumer_groups(
                [self._group], request_timeout=DESCRIBE_TIMEOUT
            )[self._group]
            description = future.result(DESCRIBE_TIMEOUT)
        except Exception as exc:  # the broker may be away: then nothing is known to be owned
            self.error = f"cannot describe group {self._group!r}: {exc}"
            return [_label(t, p) for t, p in sorted(self._wanted)]
        self.error = None
        owned = {
            (tp.topic, tp.partition)
            for member in description.members or []
            if member.assignment is not None
            for tp in member.assignment.topic_partitions or []
        }
        return [_label(t, p) for t, p in sorted(self._wanted - owned)]


def _label(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


__all__ = ["DESCRIBE_TIMEOUT", "REFRESH_INTERVAL", "GroupAssignment"]
