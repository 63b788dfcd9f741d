"""A tiny run of every benchmark scenario against the test broker, through the same entry
function as ``python -m bench``. It must work; no time and no ratio is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from bench.runner import run_bench
from bench.scenarios import SCENARIOS


def test_tiny_run_of_every_scenario(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    report = run_bench(["all"], 2_000, brokers=kafka_bootstrap, json_path=out)

    assert [r.scenario for r in report.results] == list(SCENARIOS)
    for result in report.results:
        if result.scenario == "count_eos" and result.status == "unavailable":
            assert result.reason, "an unavailable scenario says why"
            continue
        assert result.status == "ok", f"{result.scenario}: {result.reason}"
        assert result.messages > 0, result.scenario
        assert result.rate > 0, result.scenario
        assert result.peak_rss_mb, result.scenario

    document = json.loads(out.read_text())
    assert [r["scenario"] for r in document["results"]] == list(SCENARIOS)
    assert document["meta"]["messages"] == 2_000
