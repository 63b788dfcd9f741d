"""streamer's public test kit.

:class:`TestDriver` runs an app's real worker over an in-memory broker on a simulated clock,
for fast, deterministic unit tests of agents, tables, windows and timers (see its module).

:class:`FaultyBackend` (``streamer.testing.faults``) wraps a backend, real or in-memory, and
makes chosen Kafka calls fail on cue, as the real failures would: refused records, failed
or fenced transactions, refused offset commits, consumer errors, watermark timeouts, a consumer
that does not close.

``streamer.testing.pytest_plugin`` (loaded automatically through the ``pytest11`` entry point)
provides a real Kafka broker per test session (``kafka_bootstrap``) and factory fixtures
(``unique_name``, ``kafka_admin``, ``create_topic``).
"""

from streamer.testing.clock import SimulatedClock
from streamer.testing.driver import TestDriver
from streamer.testing.faults import (
    CommittedFailure,
    ConsumeFailure,
    DeliveryFailure,
    Fault,
    FaultyBackend,
    OffsetCommitFailure,
    Redelivery,
    SlowTransaction,
    StuckClose,
    TransactionFailure,
    WatermarkTimeout,
)

__all__ = [
    "CommittedFailure",
    "ConsumeFailure",
    "DeliveryFailure",
    "Fault",
    "FaultyBackend",
    "OffsetCommitFailure",
    "Redelivery",
    "SimulatedClock",
    "SlowTransaction",
    "StuckClose",
    "TestDriver",
    "TransactionFailure",
    "WatermarkTimeout",
]
