"""ErrorPolicy: what happens when an agent fails on an event.

The default, for every agent unless the app or the agent says otherwise: retry the event 3
times with exponential backoff and jitter (0.1 s, 0.2 s, 0.4 s, ...), then send it to the
dead-letter topic ``<app id>-<agent name>-dlq`` and go on with the next event. A record
that cannot be decoded goes to the dead-letter topic at once: retrying cannot fix it.

While an event is retried its lane waits, so later events of the same key stay behind it;
other lanes and partitions go on. The failed attempt's outputs and table writes are
dropped, so each attempt starts clean.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from streamer.errors import ConfigError

OnExhausted = Literal["dead_letter", "stop", "skip"]


@dataclass(frozen=True)
class ErrorPolicy:
    """``retries`` attempts after the first failure, waiting ``backoff * 2**n`` seconds (at
    most ``max_backoff``, +/- ``jitter`` as a fraction), then ``on_exhausted``:

    - ``"dead_letter"``: the event's original bytes and headers, plus the reason, go to
      ``dead_letter_topic`` (default ``<app id>-<agent>-dlq``); processing continues;
    - ``"stop"``: the worker stops with an error; the event stays uncommitted;
    - ``"skip"``: the event is logged and skipped.
    """

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.2
    on_exhausted: OnExhausted = "dead_letter"
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("ErrorPolicy: retries, backoff and max_backoff must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("ErrorPolicy: jitter is a fraction between 0 and 1")
        if self.on_exhausted not in ("dead_letter", "stop", "skip"):
            raise ConfigError(
                f"ErrorPolicy: on_exhausted must be 'dead_letter', 'stop' or 'skip', "
                f"not {self.on_exhausted!r}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter))))

    def dead_letter_topic_for(self, app_id: str, agent: str) -> str:
        return self.dead_letter_topic or f"{app_id}-{agent}-dlq"
