"""ErrorPolicy: what happens when an agent fails on an event.

The default, for every agent unless the app or the agent says otherwise: retry the event 3
times with exponential backoff and jitter (0.1 s, 0.2 s, 0.4 s, ...), then send it to the
dead-letter topic ``<app id>-<agent name>-dlq`` and go on with the next event. A record
that cannot be decoded goes to the dead-letter topic at once: retrying cannot fix it.

While an event is retried its lane waits, so later events of the same key stay behind it;
other lanes and partitions go on. The failed attempt's outputs and table writes are
dropped, so each attempt starts clean.

With ``retry_topics`` (non-blocking retries) a failed event is not retried in its lane: it
is sent to the agent's first retry topic, to be processed again once its delay passed, and
its lane goes on with the next event (see docs/task-patterns.md for the trade-off).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
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

    ``retry_topics=[timedelta(seconds=30), timedelta(minutes=5)]`` makes retries
    non-blocking: the first failure sends the event's record to the agent's retry topic 1
    (``<app id>-<agent>-retry-1``), which the agent reads again once 30 s passed; a failure
    there sends it to retry topic 2 (5 min), and a failure in the last one applies
    ``on_exhausted``. Each topic is tried once (``retries`` and ``backoff`` are not used);
    later events of the same key are no longer held behind a failed one.
    """

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.2
    on_exhausted: OnExhausted = "dead_letter"
    dead_letter_topic: str | None = None
    retry_topics: Sequence[timedelta] = ()

    def __post_init__(self) -> None:
        delays = tuple(self.retry_topics)
        if not all(isinstance(d, timedelta) and d.total_seconds() > 0 for d in delays):
            raise ConfigError(
                "ErrorPolicy: retry_topics is a list of positive delays, e.g. "
                "[timedelta(seconds=30), timedelta(minutes=5)]"
            )
        object.__setattr__(self, "retry_topics", delays)  # frozen and hashable
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

    @staticmethod
    def retry_topic_for(app_id: str, agent: str, level: int) -> str:
        """The name of ``agent``'s retry topic number ``level`` (1-based)."""
        return f"{app_id}-{agent}-retry-{level}"
