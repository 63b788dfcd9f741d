"""Shared test configuration.

The Kafka fixtures come from streamer's own pytest plugin (``streamer.testing.pytest_plugin``,
loaded through its ``pytest11`` entry point), exactly as users get them.  This file only marks
tests: those that need a real broker (``integration``), so ``pytest -m "not integration"`` runs
the unit tests alone; and the chaos tests as one pytest-xdist group (``make test`` runs
``--dist loadgroup``), so one worker process runs them one after another while the others
run the rest. Each chaos test starts several worker processes (and one its own broker);
three at once on two cores, beside a loaded machine, starved the shared broker for seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_BROKER_DIRS = ("integration", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            top = item.path.relative_to(tests_dir).parts[0]
        except (ValueError, IndexError):
            continue
        if top in _BROKER_DIRS:
            item.add_marker(pytest.mark.integration)
        if top == "chaos":
            item.add_marker(pytest.mark.xdist_group("chaos"))
