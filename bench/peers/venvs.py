"""The peers' virtualenvs: one per peer and pinned version, made on first use, then reused.

A peer never shares streamer's virtualenv: Quix Streams pins an older confluent-kafka than
streamer's, faust-streaming brings aiokafka and its own stack, and neither is a dependency of
streamer. Each lives in ``<cache>/<name>-<version>`` (``<cache>`` is ``--peers-cache``, else
``$STREAMER_BENCH_PEERS_CACHE``, else ``~/.cache/streamer-bench/peers``), made with the
interpreter that runs the bench (``python -m venv``, so the Python version is the one
streamer runs on) and ``pip install`` of the pinned requirement. ``bench-ready.json`` in it
says the install finished, with what and with which Python; a directory without it (an
install that broke off) or made for other requirements is made anew. ``--peers-refresh``
(or ``rm -rf`` of the directory) starts over.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.kafka_io import Say

CACHE_ENV = "STREAMER_BENCH_PEERS_CACHE"
READY = "bench-ready.json"
INSTALL_TIMEOUT = 900.0  # seconds for venv + pip install; a first install takes a minute or two


@dataclass(frozen=True)
class Peer:
    """A peer library: what to install, which module runs its apps, what to record."""

    name: str
    version: str
    requirements: tuple[str, ...]
    module: str
    client: str
    """The Kafka client it runs on, for the report."""

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.version}"


PEERS: tuple[Peer, ...] = (
    Peer(
        "quixstreams",
        "3.28.1",
        ("quixstreams==3.28.1",),  # orjson and rocksdict are its own dependencies
        "bench.peers.quixstreams_app",
        "confluent-kafka",
    ),
    Peer(
        "faust-streaming",
        "0.15.3",
        # rocksdict: the RocksDB store faust recommends; orjson: its fast JSON codec.
        ("faust-streaming[rocksdict,orjson]==0.15.3",),
        "bench.peers.faust_app",
        "aiokafka",
    ),
)


class PeerUnavailable(RuntimeError):
    """The peer's virtualenv could not be made; the message is one line for the report."""


def default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "streamer-bench" / "peers"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _wanted(peer: Peer) -> dict[str, object]:
    return {"requirements": list(peer.requirements), "python": platform.python_version()}


def ready_info(path: Path) -> dict[str, object] | None:
    """What ``bench-ready.json`` in ``path`` says, or None when there is none."""
    try:
        info = json.loads((path / READY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def python_of(path: Path) -> Path:
    return path / "bin" / "python"


def ensure(peer: Peer, cache: Path, say: Say, *, refresh: bool = False) -> Path:
    """The Python of ``peer``'s virtualenv, made (or remade) when needed; PeerUnavailable when
    it cannot be made (no network, a wheel that does not build, ...)."""
    path = cache / peer.slug
    if refresh:
        shutil.rmtree(path, ignore_errors=True)
    info = ready_info(path)
    wanted = _wanted(peer).items()
    if info is not None and all(info.get(k) == v for k, v in wanted) and python_of(path).exists():
        return python_of(path)
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"   making the {peer.slug} virtualenv in {path} (once; later runs reuse it)")
    steps = [
        [sys.executable, "-m", "venv", str(path)],
        [
            str(python_of(path)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *peer.requirements,
        ],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise PeerUnavailable(f"could not install {peer.slug}: {exc}") from exc
        if done.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise PeerUnavailable(
                f"could not install {peer.slug}: {_last_line(done.stderr or done.stdout)}"
            )
    freeze = subprocess.run(
        [str(python_of(path)), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    packages = dict(line.split("==", 1) for line in freeze.stdout.splitlines() if "==" in line)
    info = {**_wanted(peer), "packages": packages}
    (path / READY).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return python_of(path)
