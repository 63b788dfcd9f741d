"""Chaos scenarios run one at a time in a test session, whatever the number of xdist workers.

Each scenario is several worker processes (some a broker of their own) driven through a
crash, a stop or a rebalance; three of them at once beside the rest of the suite starve
the one shared broker on a small machine, and its answers then take seconds. A lock in the
session's shared directory makes a worker that picks a second scenario wait for the first
(tests/conftest.py spreads the scenarios through the run, so that is rare).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

from streamer.kafka.jars import file_lock

log = logging.getLogger(__name__)


@pytest.fixture(autouse=True)
def one_chaos_scenario_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process: one test at a time already
        return
    root = tmp_path_factory.getbasetemp().parent  # shared by the session's xdist workers
    asked = time.monotonic()
    with file_lock(root / "chaos.lock"):
        waited = time.monotonic() - asked
        if waited > 1:
            log.info("waited %.0fs for another chaos scenario to finish", waited)
        yield
