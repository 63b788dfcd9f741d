"""The ambient processing context: which lane (and so which event) is running now.

The worker sets ``current_lane`` in every lane task, so ``Topic.send`` called from agent
code stages its record with the event being processed (DESIGN §2 rule 2) without the user
passing anything around. Outside a worker the variable is unset and sends go out directly.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

from streamer.events import Headers


class Stager(Protocol):
    """Something that holds outputs with the event in progress until it completes."""

    def stage(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None: ...


current_lane: ContextVar[Stager | None] = ContextVar("streamer_current_lane", default=None)
