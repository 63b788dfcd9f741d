"""The parent side of the peers' benchmark (issue 20, item 5), without a broker and without
installing anything: their virtualenvs are made once and reused, an install that fails is a
reason rather than a crash, librdkafka's consumer options reach faust only where it has a
setting for them, and every peer's row says what its app does."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.peers import run as peer_run
from bench.peers import venvs
from bench.peers.options import faust_settings

QUIX = next(p for p in venvs.PEERS if p.name == "quixstreams")


def _fake_venv(path: Path, requirements: list[str]) -> None:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("")
    ready = {"requirements": requirements, "python": platform.python_version(), "packages": {}}
    (path / venvs.READY).write_text(json.dumps(ready))


def test_a_finished_virtualenv_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_venv(tmp_path / QUIX.slug, list(QUIX.requirements))

    def no_install(*_a: Any, **_k: Any) -> None:
        raise AssertionError("nothing is installed when the virtualenv is there")

    monkeypatch.setattr(subprocess, "run", no_install)
    python = venvs.ensure(QUIX, tmp_path, lambda _s: None)
    assert python == tmp_path / QUIX.slug / "bin" / "python"


def test_another_pin_or_a_broken_install_is_made_anew_and_a_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_venv(tmp_path / QUIX.slug, ["quixstreams==0.0.1"])  # made for another pin
    calls: list[list[str]] = []

    def failing_pip(args: list[str], **_k: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if "pip" in args:
            return subprocess.CompletedProcess(args, 1, "", "resolving...\nERROR: no network\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(venvs.PeerUnavailable) as caught:
        venvs.ensure(QUIX, tmp_path, lambda _s: None)
    assert str(caught.value) == "could not install quixstreams-3.28.1: ERROR: no network"
    assert [c[1:3] for c in calls] == [["-m", "venv"], ["-m", "pip"]]
    assert calls[1][-1] == "quixstreams==3.28.1"
    assert not (tmp_path / QUIX.slug).exists(), "no half-made virtualenv is left to reuse"


def test_the_default_cache_can_be_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(venvs.CACHE_ENV, str(tmp_path))
    assert venvs.default_cache() == tmp_path
    monkeypatch.delenv(venvs.CACHE_ENV)
    assert venvs.default_cache().parts[-3:] == (".cache", "streamer-bench", "peers")


def test_librdkafka_options_reach_faust_only_where_it_has_a_setting() -> None:
    applied, skipped = faust_settings(
        {
            "fetch.queue.backoff.ms": "10",
            "max.partition.fetch.bytes": "2097152",
            "session.timeout.ms": "45000",
            "check.crcs": "false",
            "queued.max.messages.kbytes": "16384",
        }
    )
    assert applied == {
        "consumer_max_fetch_size": 2_097_152,
        "broker_session_timeout": 45.0,
        "broker_check_crcs": False,
    }
    assert skipped == ["fetch.queue.backoff.ms", "queued.max.messages.kbytes"]


@pytest.mark.parametrize("peer", venvs.PEERS, ids=lambda p: p.name)
def test_every_peer_row_describes_its_app(peer: venvs.Peer) -> None:
    for scenario in peer_run.SCENARIOS:
        text = peer_run.description(peer, scenario)
        assert peer_run.row_name(peer, scenario) == f"{peer.name} {scenario}"
        assert len(text) > 40 and text != f"{peer.name} {scenario}", (peer.name, scenario)
    row = peer_run.unavailable(peer, "count_alo", "no network")
    assert (row.status, row.reason, row.extra["peer"]) == ("unavailable", "no network", peer.name)
