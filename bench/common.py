"""What every scenario shares: the payload, the transform, the counters and the result type.

The baseline and the streamer scenarios do *the same work* on *the same records*: decode a
JSON object, apply :func:`transform`, encode the result and produce it with the input's key.
The peers' apps (:mod:`bench.peers`) import this module too, in virtualenvs of their own, so
it needs nothing beyond the standard library at import time (psutil only in RssSampler).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

PARTITIONS = 4
"""Partitions of every throughput topic (the I/O scenarios use 1, see ``scenarios``)."""

KEYS = 10_000
"""Distinct keys in the generated input (spread over partitions and key-lanes)."""

MB = 1024 * 1024


def key_of(i: int) -> bytes:
    return f"user-{i % KEYS}".encode()


def payload(i: int, ts_ms: float = 0.0, pad: int = 0) -> dict[str, Any]:
    """The input record: a small order-like JSON object (about 120 bytes, ``pad`` adds more)."""
    value: dict[str, Any] = {
        "id": i,
        "user": f"user-{i % KEYS}",
        "amount": round((i % 10_000) * 0.37, 2),
        "currency": "EUR",
        "ts": ts_ms,
        "tags": ["bench", "order"],
    }
    if pad:
        value["pad"] = "x" * pad
    return value


def transform(value: dict[str, Any]) -> dict[str, Any]:
    """The per-record work of the stateless scenarios and of the baseline."""
    out = dict(value)
    out["user"] = value["user"].upper()
    out["amount_cents"] = round(value["amount"] * 100)
    out["large"] = value["amount"] >= 1_000
    return out


class Progress:
    """Counts processed records; remembers when the first and the ``target``-th were done,
    in wall time and in CPU time of the thread that processes them (the event loop's, or the
    raw loop's): its CPU per record shows the Python cost even when the broker, not Python,
    caps the rate."""

    __slots__ = ("count", "cpu_first", "cpu_last", "t_first", "t_last", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.t_first = self.t_last = 0.0
        self.cpu_first = self.cpu_last = 0.0

    def hit(self, count: int = 1) -> None:
        """``count`` more records processed (a batch counts at once)."""
        first = self.count == 0
        self.count += count
        if first:
            self.t_first = time.perf_counter()
            self.cpu_first = time.thread_time()
        if self.count >= self.target and not self.t_last:
            self.t_last = time.perf_counter()
            self.cpu_last = time.thread_time()

    @property
    def done(self) -> bool:
        return self.count >= self.target

    @property
    def seconds(self) -> float:
        return max(self.t_last - self.t_first, 1e-9)

    def cpu(self) -> dict[str, float]:
        """Main-thread CPU per record (µs) and the share of the window that thread was busy."""
        if self.target < 2 or not self.t_last:
            return {}
        cpu = self.cpu_last - self.cpu_first
        return {
            "cpu_us_per_msg": round(cpu / (self.target - 1) * 1e6, 2),
            "main_thread_busy": round(cpu / self.seconds, 3),
        }

    @property
    def rate(self) -> float:
        """Records per second between the first and the last record processed."""
        if self.target < 2:
            return 0.0
        return (self.target - 1) / self.seconds


class RssSampler:
    """Samples the resident set size of this process, or of process ``pid`` (a peer's child,
    seen from the parent), in a daemon thread (psutil)."""

    def __init__(self, interval: float = 0.05, pid: int | None = None) -> None:
        import psutil  # type: ignore[import-untyped,unused-ignore]

        self._proc = psutil.Process(pid)
        self._gone: tuple[type[BaseException], ...] = (psutil.Error,)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (time.perf_counter(), MB)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> float:
        """One sample now (MB); 0.0, and none recorded, once the process has exited."""
        try:
            mb = float(self._proc.memory_info().rss) / MB
        except self._gone:
            return 0.0
        self.samples.append((time.perf_counter(), mb))
        return mb

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass
class Result:
    """One row of the report. ``status`` is "ok", "unavailable" or "failed"."""

    scenario: str
    description: str
    status: str = "ok"
    messages: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    ratio: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
