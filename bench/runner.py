"""``run_bench``: the one entry point, used by ``python -m bench`` and by the tests."""

from __future__ import annotations

import datetime
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Result
from bench.kafka_io import Say, broker
from bench.peers import run as peer_run
from bench.peers import venvs
from bench.report import machine, sources_digest, table, write_json
from bench.scenarios import SCENARIOS, Env, run_scenario


@dataclass
class Report:
    """What a run produced: ``results`` in run order, ``meta`` (machine, command, broker)."""

    meta: dict[str, Any]
    results: list[Result] = field(default_factory=list)

    def get(self, scenario: str) -> Result:
        return next(r for r in self.results if r.scenario == scenario)

    @property
    def failed(self) -> list[Result]:
        """streamer's failed rows (a peer that fails is reported, but is not streamer's)."""
        return [r for r in self.results if r.status == "failed" and "peer" not in r.extra]


def resolve(selection: Sequence[str]) -> list[str]:
    """Scenario names from ``all`` or names (comma-separated allowed); the baseline is always
    included, and first, since every ratio is to the baseline of the same invocation."""
    wanted: set[str] = set()
    for item in selection:
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name == "all":
                wanted.update(SCENARIOS)
            elif name in SCENARIOS:
                wanted.add(name)
            else:
                raise ValueError(
                    f"unknown scenario {name!r}; choose from all, {', '.join(SCENARIOS)}"
                )
    wanted.add("baseline")
    return [name for name in SCENARIOS if name in wanted]


def add_ratios(results: Sequence[Result]) -> None:
    """Fill ``ratio`` (rate / baseline rate) and the goal ratios the issue asks for."""
    by_name = {r.scenario: r for r in results if r.status == "ok"}
    base = by_name.get("baseline")
    for result in results:
        if result.status != "ok" or base is None or not base.rate:
            continue
        if result.scenario != "latency":  # its rate is the offered load, not a capacity
            result.ratio = float(f"{result.rate / base.rate:.4g}")
            cpu, base_cpu = result.extra.get("cpu_us_per_msg"), base.extra.get("cpu_us_per_msg")
            if cpu and base_cpu:  # the goal: CPU per record vs the raw loop's
                result.extra["cpu_vs_raw"] = round(float(cpu) / float(base_cpu), 2)
    conc1, conc8 = by_name.get("io_conc1"), by_name.get("io_conc8")
    if conc1 and conc8 and conc1.rate:
        conc8.extra["speedup_vs_conc1"] = round(conc8.rate / conc1.rate, 2)
    for alo_name, eos_name in (("count_alo", "count_eos"), ("count_emit_alo", "count_emit_eos")):
        for name, eos in by_name.items():
            if not name.endswith(eos_name):
                continue
            alo = by_name.get(name.removesuffix(eos_name) + alo_name)  # a peer's: "quixstreams "
            if alo and alo.rate:
                eos.extra["vs_count_alo"] = round(eos.rate / alo.rate, 3)


@dataclass
class Peers:
    """The peers of a ``--peers`` run: each one's Python, or why it has none."""

    pythons: dict[str, Path] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(cls, cache: Path, refresh: bool, meta: dict[str, Any], say: Say) -> Peers:
        """Make (or find) every peer's virtualenv before anything is measured."""
        peers = cls()
        meta["peers"] = {}
        for peer in venvs.PEERS:
            say(f"-- {peer.slug}: virtualenv ...")
            entry: dict[str, Any] = {"requirements": list(peer.requirements), "client": peer.client}
            try:
                python = venvs.ensure(peer, cache, say, refresh=refresh)
            except venvs.PeerUnavailable as exc:
                peers.reasons[peer.name] = str(exc)
                entry.update(status="unavailable", reason=str(exc))
                say(f"   unavailable: {exc}")
            else:
                peers.pythons[peer.name] = python
                info = venvs.ready_info(python.parent.parent) or {}
                entry.update(status="ready", python=info.get("python"), path=str(python))
                say(f"   ready: {python}")
            meta["peers"][peer.name] = entry
        return peers

    def run(self, scenario: str, env: Env, meta: dict[str, Any]) -> Iterator[Result]:
        """Every peer's row for ``scenario``, one by one; the versions each child reports go
        to ``meta["peers"]``."""
        for peer in venvs.PEERS:
            env.say(f"-- {peer_run.row_name(peer, scenario)} ...")
            python = self.pythons.get(peer.name)
            if python is None:
                yield peer_run.unavailable(peer, scenario, self.reasons[peer.name])
                continue
            result = peer_run.run_peer_scenario(peer, python, scenario, env)
            versions = result.extra.get("versions")
            if isinstance(versions, dict):
                meta["peers"][peer.name].setdefault("versions", {}).update(versions)
            yield result


def run_bench(
    scenarios: Sequence[str],
    messages: int,
    *,
    brokers: str | None = None,
    json_path: Path | None = None,
    profile: str | None = None,
    consumer_config: dict[str, str] | None = None,
    command: str | None = None,
    say: Say = print,
    peers: bool = False,
    peers_cache: Path | None = None,
    peers_refresh: bool = False,
) -> Report:
    """Run ``scenarios`` (names or "all") with ``messages`` as the scale, against ``brokers``
    (else ``$STREAMER_BENCH_BROKERS``, else a LocalKafka started for the run); print the table,
    write the JSON to ``json_path`` when given, and return the report. ``consumer_config``
    (librdkafka options) applies to the baseline and to every streamer app alike, and to the
    peers. ``peers``: after each of stateless_json, count_alo and count_eos, the same
    scenario with every peer of :data:`bench.peers.venvs.PEERS` (virtualenvs under
    ``peers_cache``, made anew with ``peers_refresh``)."""
    if messages < 2:
        raise ValueError("--messages must be at least 2")
    names = resolve(scenarios)
    started = time.monotonic()
    state_dir = Path(tempfile.mkdtemp(prefix="streamer-bench-state-"))
    report = Report(
        meta={
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": command,
            "messages": messages,
            "scenarios": names,
            "consumer_config": dict(consumer_config or {}),
            "machine": machine(),
            "streamer_sources": sources_digest(),
        }
    )

    def said(result: Result) -> None:
        say(f"   {result.status}: {result.messages:,} in {result.seconds:.2f}s = "
            f"{result.rate:,.0f}/s (wall {result.extra.get('wall_seconds')}s)"
            + (f" - {result.reason.splitlines()[0]}" if result.reason else ""))  # fmt: skip

    try:
        prepared = (
            Peers.prepare(peers_cache or venvs.default_cache(), peers_refresh, report.meta, say)
            if peers
            else None
        )
        with broker(brokers, say) as bootstrap:
            report.meta["brokers"] = bootstrap
            report.meta["broker_source"] = "given" if brokers else "env or local"
            env = Env(bootstrap, messages, state_dir, say, profile, dict(consumer_config or {}))
            # The broker's JVM compiles its hot paths and the OS caches its files during the
            # first run through it: the raw loop measured first on a fresh broker was held
            # back by the broker (its loop 54-64% busy where it is 94% on a warm one), and
            # every ratio of the invocation is to it. One unrecorded raw loop warms it.
            say("-- warm-up (the raw loop, not recorded) ...")
            run_scenario("baseline", env)
            for name in names:
                say(f"-- {name} ...")
                result = run_scenario(name, env)
                report.results.append(result)
                said(result)
                if prepared is not None and name in peer_run.SCENARIOS:
                    for row in prepared.run(name, env, report.meta):
                        report.results.append(row)
                        said(row)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    add_ratios(report.results)
    if sources_digest() != report.meta["streamer_sources"]:
        report.meta["streamer_sources_changed_during_run"] = True
        say("warning: streamer's sources changed during the run; the figures mix versions")
    report.meta["wall_seconds"] = round(time.monotonic() - started, 1)
    say("")
    say(table(report.results))
    if json_path is not None:
        write_json(json_path, report.meta, report.results)
        say(f"\nwrote {json_path}")
    return report
