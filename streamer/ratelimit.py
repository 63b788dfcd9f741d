"""Rate limits: ``@app.agent(..., rate_limit="100/s", rate_limit_per_key="5/s")``.

A limit is a token bucket: it refills at the rate and holds at most one second's worth of
tokens (at least one), so a quiet agent may take a short burst and then keeps to the rate.
A lane takes a token before it hands an event out; when none is left it *reserves* the next
one and sleeps until it is due (on the worker's clock, so the TestDriver's simulated time
drives it too), never polling. Reservations make concurrent lanes sharing one bucket (the
agent-wide limit) wait in turn, each for its own slot.

The agent-wide bucket is shared by every lane of the agent in one worker process: with
several workers each one keeps to the rate (the group's total is the rate times the
number of workers). The per-key buckets live in the lane the key maps to; a key waiting
for its bucket holds back the later events of its lane (they may share its key, whose
order must hold), while other lanes go on. Raise ``concurrency`` to give keys more lanes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from streamer.errors import ConfigError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")
MAX_KEY_BUCKETS = 10_000  # idle per-key buckets beyond this are forgotten (memory stays flat)


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` events a second; ``text`` as the user wrote it."""

    per_second: float
    text: str

    @property
    def burst(self) -> float:
        return max(1.0, self.per_second)


def parse_rate(text: str | None, what: str) -> Rate | None:
    """``"100/s"``, ``"30/m"``, ``"2/h"`` -> Rate; None stays None; anything else raises
    ConfigError naming ``what`` and the expected form."""
    if text is None:
        return None
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{what}={text!r} is not a rate; write a positive count per unit, e.g. "
            "'100/s', '30/m' or '2/h'"
        )
    return Rate(float(match.group(1)) / _UNITS[match.group(2)], text)


class TokenBucket:
    """One limit. :meth:`reserve` takes a token and returns the seconds to wait for it."""

    __slots__ = ("_now", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: Rate, now: Callable[[], float]) -> None:
        self._rate = rate
        self._now = now
        self._tokens = rate.burst
        self._stamp = now()

    def _refill(self) -> float:
        now = self._now()
        burst, per_second = self._rate.burst, self._rate.per_second
        self._tokens = min(burst, self._tokens + (now - self._stamp) * per_second)
        self._stamp = now
        return self._tokens

    def reserve(self) -> float:
        """Take one token (possibly ahead of time: the balance goes negative) and return
        how long the caller must wait before using it (0 when one was there)."""
        tokens = self._refill() - 1
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self._rate.per_second

    def idle(self) -> bool:
        """Full again: forgetting it changes nothing."""
        return self._refill() >= self._rate.burst


class KeyBuckets:
    """The per-key buckets of one lane, bounded: when there are too many, the full (idle)
    ones are dropped, since a new bucket starts full anyway."""

    __slots__ = ("_buckets", "_now", "_rate")

    def __init__(self, rate: Rate, now: Callable[[], float]) -> None:
        self._rate = rate
        self._now = now
        self._buckets: dict[object, TokenBucket] = {}

    def reserve(self, key: object) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEY_BUCKETS:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.idle()}
            bucket = self._buckets[key] = TokenBucket(self._rate, self._now)
        return bucket.reserve()
