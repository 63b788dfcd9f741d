"""Shared test configuration.

The Kafka fixtures come from streamer's own pytest plugin (``streamer.testing.pytest_plugin``,
loaded through its ``pytest11`` entry point), exactly as users get them.  This file marks
tests that need a real broker, so ``pytest -m "not integration"`` runs the unit tests alone,
and spreads the chaos scenarios through the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    # The chaos scenarios run one at a time (tests/chaos/conftest.py): spread them evenly
    # through the run instead of handing them to every xdist worker at once at its start.
    # The order is the same in every process, as xdist requires.
    chaos = [item for item in items if _top_dir(item, tests_dir) == "chaos"]
    if not chaos or len(chaos) == len(items):
        return
    others = [item for item in items if _top_dir(item, tests_dir) != "chaos"]
    spread: list[pytest.Item] = []
    step = len(others) / len(chaos)
    for i, scenario in enumerate(chaos):
        spread.extend(others[round(i * step) : round((i + 1) * step)])
        spread.append(scenario)
    items[:] = spread
