"""The ambient processing context: which lane (and so which event) is running now.

The worker sets ``current_lane`` in every lane task, so ``Topic.send`` called from agent
code stages its record with the event being processed (DESIGN §2 rule 2) without the user
passing anything around. Outside a worker the variable is unset and sends go out directly.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from streamer.events import Headers

if TYPE_CHECKING:
    from streamer.state.table import TableWrite


class Stager(Protocol):
    """Something that holds outputs and table writes with the event in progress until it
    completes (a worker lane)."""

    @property
    def partition(self) -> int:
        """The source partition of the event in progress (= the table partition); -1 when
        the code runs outside any event (a timer)."""
        ...

    def stage_write(self, write: TableWrite) -> None: ...

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None: ...


current_lane: ContextVar[Stager | None] = ContextVar("streamer_current_lane", default=None)
