"""Shared test configuration.

The Kafka fixtures come from streamer's own pytest plugin (``streamer.testing.pytest_plugin``,
loaded through its ``pytest11`` entry point), exactly as users get them.  This file marks
tests that need a real broker, so ``pytest -m "not integration"`` runs the unit tests alone,
and runs the heavy scenarios (chaos, the secured broker) one at a time, spread through the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.kafka.jars import file_lock

log = logging.getLogger(__name__)

_BROKER_DIRS = ("integration", "chaos")


def _top_dir(item: pytest.Item, tests_dir: Path) -> str | None:
    try:
        return item.path.relative_to(tests_dir).parts[0]
    except (ValueError, IndexError):
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        if _top_dir(item, tests_dir) in _BROKER_DIRS:
            item.add_marker(pytest.mark.integration)
    # The heavy scenarios run one at a time (heavy_scenario below): spread them evenly
    # through the run instead of handing them to every xdist worker at once at its start.
    # The order is the same in every process, as xdist requires.
    heavy = [item for item in items if _heavy(item, tests_dir)]
    if not heavy or len(heavy) == len(items):
        return
    others = [item for item in items if not _heavy(item, tests_dir)]
    spread: list[pytest.Item] = []
    step = len(others) / len(heavy)
    for i, scenario in enumerate(heavy):
        spread.extend(others[round(i * step) : round((i + 1) * step)])
        spread.append(scenario)
    items[:] = spread


def _heavy(item: pytest.Item, tests_dir: Path) -> bool:
    return _top_dir(item, tests_dir) == "chaos" or item.path.name == "test_security.py"


@pytest.fixture
def heavy_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run the test alone among the session's heavy scenarios: the chaos tests (several
    worker processes driven through crashes and rebalances, some with a broker of their
    own) and the tests on the second, secured broker. Three of them at once beside the rest
    of the suite starve the shared broker on a small machine for seconds to minutes; a lock
    in the directory the session's xdist workers share makes a second one wait."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process: one test at a time already
        return
    root = tmp_path_factory.getbasetemp().parent  # shared by the session's xdist workers
    asked = time.monotonic()
    with file_lock(root / "heavy.lock"):
        waited = time.monotonic() - asked
        if waited > 1:
            log.info("waited %.0fs for another heavy scenario to finish", waited)
        yield
