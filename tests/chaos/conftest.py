"""Chaos scenarios run one at a time in a test session, whatever the number of xdist workers
(the lock is :func:`tests.conftest.heavy_scenario`; tests/conftest.py also spreads the
scenarios through the run, so a worker rarely waits for it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_chaos_scenario_at_a_time(heavy_scenario: None) -> None:
    """Every chaos test holds the session's heavy-scenario lock while it runs."""
