"""The parent side of a peer run: the same topics and input as streamer's scenario, the peer's
app in a child process in its own virtualenv, and the same checks on what it left behind.

Like :func:`bench.scenarios._passthrough` and ``_count``: fresh uniquely named topics of 4
partitions, ``messages`` JSON records pre-produced (:func:`bench.kafka_io.json_records`),
then one child process. The child times itself with the same :class:`bench.common.Progress`
(first record processed to the last) and the same CPU clock (the processing thread's); its
peak RSS is sampled from here, every 50 ms as streamer's children sample their own. The
checks: the stateless output topic holds at least one record per input (end offsets, as for
streamer); the count's changelog, read back to its end (``read_committed``), adds up to the
number of records (streamer checks its table's sum in the worker; a peer's state is not
reachable from outside its process, its changelog is).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.common import PARTITIONS, Result, RssSampler
from bench.kafka_io import Topics, end_offsets, json_records, produce, unique
from bench.peers.venvs import Peer
from bench.scenarios import Env

SCENARIOS = ("stateless_json", "count_alo", "count_eos")
"""The scenarios the peers run, by streamer's names."""

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: on the child's PYTHONPATH, for bench.common and bench.peers."""


def row_name(peer: Peer, scenario: str) -> str:
    return f"{peer.name} {scenario}"


def description(peer: Peer, scenario: str) -> str:
    """The docstring of the scenario's function in the peer's app module, read without
    importing it (the peer's package is not installed here)."""
    path = ROOT / Path(*peer.module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == scenario:
            return " ".join((ast.get_docstring(node) or "").split())
    return f"{peer.name} {scenario}"


def unavailable(peer: Peer, scenario: str, reason: str) -> Result:
    return Result(
        row_name(peer, scenario),
        description(peer, scenario),
        status="unavailable",
        reason=reason,
        extra={"peer": peer.name, "peer_version": peer.version},
    )


def changelog_total(brokers: str, topics: list[str], timeout: float = 60.0) -> int:
    """Read ``topics`` to their end as a ``read_committed`` consumer and add up the latest
    value (a JSON integer) of every key: the counts a changelog holds."""
    if not topics:
        return 0
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique("changelog-reader"),
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    latest: dict[tuple[str, bytes | None], int] = {}
    try:
        parts = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard((message.topic() or "", message.partition() or 0))
                    continue
                key = (message.topic() or "", message.key())
                value = message.value()
                if value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = int(orjson.loads(value))
        if pending:
            raise RuntimeError(f"changelog not read to its end within {timeout:.0f}s")
    finally:
        consumer.close()
    return sum(latest.values())


def _owned_topics(topics: Topics, app_id: str) -> list[str]:
    """Topics the peer created for itself: every name containing its unique app id."""
    names = topics.admin.list_topics(timeout=10).topics
    return sorted(name for name in names if app_id in name)


def _child(
    peer: Peer, python: Path, params: dict[str, Any], workdir: Path, timeout: float
) -> tuple[dict[str, Any], float | None]:
    """Run the peer's app module; its result dict and peak RSS (MB, sampled from here)."""
    workdir.mkdir(parents=True, exist_ok=True)
    params_path, result_path = workdir / "params.json", workdir / "result.json"
    log_path = workdir / "child.log"
    params_path.write_text(json.dumps(params), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(python), "-m", peer.module, str(params_path), str(result_path)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        sampler = RssSampler(pid=proc.pid).start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise RuntimeError(f"{peer.name} child ran past {timeout:.0f}s") from None
        finally:
            sampler.stop()
    peak = round(sampler.peak_mb, 1) if sampler.samples else None
    try:
        document = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise RuntimeError(
            f"{peer.name} child exited (code {code}) without a result: "
            + (tail[-1] if tail else "no output")
        ) from None
    if "error" in document:
        error = document["error"]
        raise RuntimeError(f"{error['kind']}: {error['message']}\n{error['trace']}")
    result: dict[str, Any] = document["result"]
    return result, peak


def run_peer_scenario(peer: Peer, python: Path, scenario: str, env: Env) -> Result:
    """One peer row: ``scenario`` (a name of :data:`SCENARIOS`) with ``peer``'s app."""
    n = env.messages
    name = row_name(peer, scenario)
    topics = Topics(env.brokers)
    started = time.monotonic()
    app_id = unique(f"{peer.name}-{scenario}")
    topics.groups.append(app_id)
    try:
        src = topics.create(unique(f"{peer.name}-{scenario}-in"), PARTITIONS)
        dst = (
            topics.create(unique(f"{peer.name}-{scenario}-out"), PARTITIONS)
            if scenario == "stateless_json"
            else ""
        )
        produce(env.brokers, src, json_records(n))
        params = {
            "scenario": scenario,
            "brokers": env.brokers,
            "src": src,
            "dst": dst,
            "n": n,
            "partitions": PARTITIONS,
            "app_id": app_id,
            "state_dir": str(env.state_dir / app_id),
            "consumer_config": env.consumer_config,
        }
        try:
            out, peak = _child(
                peer, python, params, env.state_dir / f"{app_id}-run", env.timeout(n) + 60
            )
            checked: dict[str, Any]
            if scenario == "stateless_json":
                checked = {"outputs": end_offsets(env.brokers, dst)}
            else:
                changelogs = [t for t in _owned_topics(topics, app_id) if "changelog" in t]
                checked = {
                    "changelogs": changelogs,
                    "counted": changelog_total(env.brokers, changelogs),
                }
        finally:
            topics.created += [t for t in _owned_topics(topics, app_id) if t not in topics.created]
    except Exception as exc:
        result = Result(name, description(peer, scenario), status="failed", reason=str(exc))
        result.extra.update(peer=peer.name, peer_version=peer.version)
        result.extra["wall_seconds"] = round(time.monotonic() - started, 1)
        return result
    finally:
        topics.cleanup()
    known = {"processed", "seconds", "rate"}
    result = Result(
        scenario=name,
        description=description(peer, scenario),
        messages=int(out["processed"]),
        seconds=round(float(out["seconds"]), 3),
        rate=round(float(out["rate"]), 1),
        peak_rss_mb=peak,
        extra={
            "peer": peer.name,
            "peer_version": peer.version,
            "client": peer.client,
            **{k: v for k, v in out.items() if k not in known},
            **checked,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
    )
    if "outputs" in checked and checked["outputs"] < result.messages:
        result.status = "failed"
        result.reason = f"only {checked['outputs']} outputs for {result.messages} records"
    elif "counted" in checked and checked["counted"] < n:
        result.status = "failed"
        result.reason = f"its changelog counts {checked['counted']} events of {n}"
    elif scenario == "count_eos" and not out.get("exactly_once_active"):
        result.status = "unavailable"
        result.reason = f"{peer.name} ran without transactions"
    return result
