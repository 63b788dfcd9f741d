"""Readiness (``/ready``): is this worker processing everything it owns, and does its group
own every source partition. The web server asks :meth:`Readiness.check` from its thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamer.kafka.group import GroupAssignment

if TYPE_CHECKING:
    from streamer.kafka.backend import Admin
    from streamer.worker.partition import PartitionState


class Readiness:
    """Readiness of one worker. ``states`` is the worker's own mapping of owned partitions
    and ``recovery`` its (table, partition) -> (restored, remaining) of table recoveries
    (both read, never changed here)."""

    def __init__(
        self,
        states: Mapping[tuple[str, int], PartitionState],
        recovery: Mapping[tuple[str, int], tuple[int, int]],
    ) -> None:
        self._states = states
        self._recovery = recovery
        self._group: GroupAssignment | None = None  # set by watch_group

    def watch_group(self, admin: Admin, group: str, partitions: Mapping[str, int]) -> None:
        """From now on readiness also requires every partition of ``partitions`` (the app's
        source topics, repartition topics included) to be owned by some member of ``group``
        (see :class:`GroupAssignment`)."""
        self._group = GroupAssignment(admin, group, partitions)

    def check(self) -> tuple[bool, dict[str, Any]]:
        """Ready when partitions are assigned and every one is restored and processing (its
        ``ready`` event set, its lanes open), and (once :meth:`watch_group` was called) every
        source partition of the app is owned by some member of the group. The detail says
        which are not, and why. Call it from the web server's thread: it reads from a copy of
        the partition map, and may ask the broker about the group (at most once a second)."""
        states = list(self._states.values())  # one C-level copy: atomic under the GIL
        waiting: dict[str, str] = {}
        for state in states:
            if not state.ready.is_set():
                waiting[state.label] = "restoring"
            elif any(lane.closing for lane in state.lanes):
                waiting[state.label] = "stopping"
        unassigned = self._group.unassigned() if self._group is not None else []
        ready = bool(states) and not waiting and not unassigned
        detail: dict[str, Any] = {"ready": ready, "assigned": len(states)}
        if not states:
            detail["reason"] = "no partitions assigned"
        if unassigned:
            # In the group, not here: a partition no member owns is processed by nobody.
            detail["unassigned_in_group"] = unassigned
            if self._group is not None and self._group.error is not None:
                detail["group_error"] = self._group.error
        if waiting:
            detail["not_ready"] = waiting
            owned = {(p.table.name, p.partition) for s in states for p in s.tables}
            detail["recovery"] = {
                f"{table}[{partition}]": {"restored": done, "remaining": left}
                for (table, partition), (done, left) in sorted(list(self._recovery.items()))
                if (table, partition) in owned and left > 0
            }
        return ready, detail
