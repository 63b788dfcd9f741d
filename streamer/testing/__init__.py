"""streamer's public test kit.

:class:`TestDriver` runs an app's real worker over an in-memory broker on a simulated clock,
for fast, deterministic unit tests of agents, tables, windows and timers (see its module).

``streamer.testing.pytest_plugin`` (loaded automatically through the ``pytest11`` entry point)
provides a real Kafka broker per test session (``kafka_bootstrap``) and factory fixtures
(``unique_name``, ``kafka_admin``, ``create_topic``).
"""

from streamer.testing.clock import SimulatedClock
from streamer.testing.driver import TestDriver

__all__ = ["SimulatedClock", "TestDriver"]
