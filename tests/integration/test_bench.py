"""A tiny run of every benchmark scenario against the test broker, through the same entry
function as ``python -m bench``. It must work; no time and no ratio is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers import venvs
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


def test_peers_that_cannot_be_installed_are_rows_not_a_crash(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--peers`` wiring, without installing anything: each peer's row follows streamer's
    for the same scenario, says why it did not run, and does not fail the run."""

    def no_network(peer: venvs.Peer, *_a: object, **_k: object) -> Path:
        raise venvs.PeerUnavailable(f"could not install {peer.slug}: no network")

    monkeypatch.setattr(venvs, "ensure", no_network)
    out = tmp_path / "bench.json"
    report = run_bench(["stateless_json"], 200, brokers=kafka_bootstrap, json_path=out, peers=True)

    names = [p.name for p in venvs.PEERS]
    assert [r.scenario for r in report.results] == [
        "baseline",
        "stateless_json",
        *(f"{name} stateless_json" for name in names),
    ]
    assert report.failed == []
    for row in report.results[2:]:
        assert row.status == "unavailable"
        assert row.reason and row.reason.endswith("no network")
    meta = json.loads(out.read_text())["meta"]
    assert {name: meta["peers"][name]["status"] for name in names} == dict.fromkeys(
        names, "unavailable"
    )
