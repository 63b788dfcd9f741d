"""Shared test configuration.

The Kafka fixtures come from streamer's own pytest plugin (``streamer.testing.pytest_plugin``,
loaded through its ``pytest11`` entry point), exactly as users get them.  This file only marks
tests that need a real broker, so ``pytest -m "not integration"`` runs the unit tests alone.
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
