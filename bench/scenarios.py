"""The scenarios, parent side: topics, pre-produced input, one child per measurement.

Every scenario creates its own uniquely named topics (deleted at the end), pre-produces its
input, then runs the work in a fresh child process (see :mod:`bench.child`) that reports the
time from the first record processed to the last, and its own peak RSS. Each function's
docstring says what it measures; it is also the description in the JSON report.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.child import ChildError, Job, run_job
from bench.common import PARTITIONS, Result, percentile
from bench.kafka_io import (
    CommittedReader,
    Say,
    Topics,
    end_offsets,
    json_records,
    produce,
    produce_at_rate,
    read_latencies,
    unique,
)
from bench.scale import processes_result, run_processes

IO_DELAY = 0.005  # seconds the I/O-bound agent awaits per event
LATENCY_RATE = 2_000.0  # records per second offered in the latency scenario
LATENCY_WARMUP = 1.0  # seconds between owning the partitions and starting the load
BACKLOG_PAD = 1_000  # extra bytes per record of the backlog scenario (about 1.1 KB each)
BACKLOG_DELAY = 0.001  # seconds the slow agent awaits per event


@dataclass
class Env:
    """What every scenario gets: the broker, the size of the run, a scratch directory."""

    brokers: str
    messages: int
    state_dir: Path
    say: Say
    profile: str | None = None
    consumer_config: dict[str, str] = field(default_factory=dict)
    """librdkafka consumer overrides for the baseline *and* every streamer app alike."""

    def profile_path(self, scenario: str) -> str | None:
        """Where ``scenario``'s child writes its profile (``--profile PATH``): PATH itself
        for stateless_json (as before), ``PATH-<scenario>`` for the others; never the raw
        loop (profiling it would move the figure everything is compared with)."""
        if self.profile is None or scenario == "stateless_json":
            return self.profile
        if scenario == "baseline":
            return None
        return f"{self.profile}-{scenario}"

    def timeout(self, n: int, floor_rate: float = 1_000.0) -> float:
        """Child timeout: generous, so only a hung run hits it."""
        return 120.0 + n / floor_rate


Scenario = Callable[[Env], Result]


def _description(fn: Callable[..., Any]) -> str:
    return " ".join((inspect.getdoc(fn) or "").split())


def _ok(name: str, fn: Callable[..., Any], out: dict[str, Any], **extra: Any) -> Result:
    known = {"processed", "seconds", "rate", "peak_rss_mb"}
    return Result(
        scenario=name,
        description=_description(fn),
        messages=int(out["processed"]),
        seconds=round(float(out["seconds"]), 3),
        rate=round(float(out["rate"]), 1),
        peak_rss_mb=out.get("peak_rss_mb"),
        extra={**{k: v for k, v in out.items() if k not in known}, **extra},
    )


def _passthrough(
    env: Env, name: str, work: str, n: int, *, partitions: int = PARTITIONS, **params: Any
) -> tuple[dict[str, Any], int]:
    """Pre-produce ``n`` JSON records, process them in a child, count the outputs."""
    topics = Topics(env.brokers)
    try:
        src = topics.create(unique(f"{name}-in"), partitions)
        dst = topics.create(unique(f"{name}-out"), partitions)
        produce(env.brokers, src, json_records(n))
        app_id = unique(name)
        topics.groups.append(app_id)
        job = Job(
            work,
            env.brokers,
            {
                "src": src,
                "dst": dst,
                "n": n,
                "partitions": partitions,
                "app_id": app_id,
                "group": app_id,
                "state_dir": str(env.state_dir),
                "consumer_config": env.consumer_config,
                "timeout": env.timeout(n),
                **params,
            },
            profile=env.profile_path(name),
        )
        out = run_job(job, timeout=env.timeout(n) + 60)
        return out, end_offsets(env.brokers, dst, at_least=n)
    finally:
        topics.cleanup()


def _checked(name: str, fn: Callable[..., Any], out: dict[str, Any], outputs: int) -> Result:
    result = _ok(name, fn, out, outputs=outputs)
    if outputs < result.messages:
        result.status = "failed"
        result.reason = f"only {outputs} outputs for {result.messages} records processed"
    return result


def baseline(env: Env) -> Result:
    """Raw confluent-kafka loop, no framework: consume(batch) -> orjson parse -> transform ->
    orjson encode -> produce, flush+commit every commit interval; same client settings as
    streamer. The ceiling the other scenarios are compared with."""
    out, outputs = _passthrough(env, "baseline", "raw", env.messages)
    return _checked("baseline", baseline, out, outputs)


def stateless_json(env: Env) -> Result:
    """Stateless JSON pass-through: value_type=dict in and out, the agent yields the
    transformed dict (concurrency 1, 4 partitions, default consume_batch/commit_interval)."""
    out, outputs = _passthrough(env, "stateless_json", "stateless", env.messages)
    return _checked("stateless_json", stateless_json, out, outputs)


def stateless_batch(env: Env) -> Result:
    """The stateless JSON pass-through through batches: ``async for batch in
    stream.take(500, 0.01)``, yielding the transformed dict of each event (concurrency 1,
    4 partitions)."""
    out, outputs = _passthrough(
        env, "stateless_batch", "stateless", env.messages, batch=500, within=0.01
    )
    return _checked("stateless_batch", stateless_batch, out, outputs)


def stateless_pydantic(env: Env) -> Result:
    """Stateless with pydantic models: the input validated into an Order model, the agent
    yields an Enriched model (the same transform), encoded by its JSON serde."""
    out, outputs = _passthrough(env, "stateless_pydantic", "stateless", env.messages, model=True)
    return _checked("stateless_pydantic", stateless_pydantic, out, outputs)


def io_messages(env: Env) -> int:
    return max(env.messages // 200, 200)


def io_conc1(env: Env) -> Result:
    """I/O-bound agent: awaits 5 ms per event, then yields the transformed dict; one
    partition, concurrency 1 (one lane). Runs messages/200 records (at least 200)."""
    out, outputs = _passthrough(
        env, "io_conc1", "stateless", io_messages(env), partitions=1, delay=IO_DELAY, concurrency=1
    )
    return _checked("io_conc1", io_conc1, out, outputs)


def io_conc8(env: Env) -> Result:
    """The same I/O-bound agent at concurrency 8 (eight key-lanes on the one partition);
    ``speedup_vs_conc1`` is its rate over io_conc1's (ideal: 8)."""
    out, outputs = _passthrough(
        env, "io_conc8", "stateless", io_messages(env), partitions=1, delay=IO_DELAY, concurrency=8
    )
    return _checked("io_conc8", io_conc8, out, outputs)


def _count(
    env: Env, name: str, fn: Callable[..., Any], guarantee: str, *, emit: bool = False
) -> Result:
    n = env.messages
    topics = Topics(env.brokers)
    try:
        src = topics.create(unique(f"{name}-in"), PARTITIONS)
        dst = topics.create(unique(f"{name}-out"), PARTITIONS) if emit else ""
        produce(env.brokers, src, json_records(n))
        app_id = unique(name)
        topics.groups.append(app_id)
        topics.created.append(f"{app_id}-counts-changelog")  # the worker creates it
        job = Job(
            "count",
            env.brokers,
            {
                "src": src,
                "n": n,
                "partitions": PARTITIONS,
                "app_id": app_id,
                "state_dir": str(env.state_dir),
                "consumer_config": env.consumer_config,
                "guarantee": guarantee,
                "dst": dst,
                "timeout": env.timeout(n),
            },
            profile=env.profile_path(name),
        )
        out = run_job(job, timeout=env.timeout(n) + 60)
        outputs = end_offsets(env.brokers, dst, at_least=n) if emit else None
    finally:
        topics.cleanup()
    result = _ok(name, fn, out) if outputs is None else _ok(name, fn, out, outputs=outputs)
    if out["counted"] < n:
        result.status = "failed"
        result.reason = f"the table counts {out['counted']} events of {n}"
    elif outputs is not None and outputs < n:
        result.status = "failed"
        result.reason = f"only {outputs} counts emitted for {n} events"
    return result


def count_alo(env: Env) -> Result:
    """Stateful count, at-least-once: ``counts[event.key] += 1`` in a table
    (``app.table("counts", default=int, value_type=int)``, RocksDB + changelog), JSON input,
    10,000 keys over 4 partitions."""
    return _count(env, "count_alo", count_alo, "at_least_once")


def count_eos(env: Env) -> Result:
    """The same count with ``processing_guarantee="exactly_once"`` (outputs, changelog and
    offsets in one transaction); "unavailable" while the worker does not implement it."""
    try:
        result = _count(env, "count_eos", count_eos, "exactly_once")
    except ChildError as exc:
        return Result("count_eos", _description(count_eos), status="unavailable", reason=str(exc))
    if result.status == "ok" and not result.extra.get("exactly_once_active"):
        return Result(
            "count_eos",
            _description(count_eos),
            status="unavailable",
            reason=(
                "processing_guarantee='exactly_once' is accepted, but the worker ran "
                f"{result.extra.get('checkpoint')} (no transactions): exactly-once is not "
                "implemented yet (issue 5)"
            ),
            extra={"rate_without_transactions": result.rate},
        )
    return result


def count_emit_alo(env: Env) -> Result:
    """Count and emit, at-least-once: ``counts[event.key] += 1`` then
    ``yield event.key, counts[event.key]`` to a sink topic (4 partitions); the outputs are
    counted (end offsets; under exactly-once this includes one marker per transaction)."""
    return _count(env, "count_emit_alo", count_emit_alo, "at_least_once", emit=True)


def count_emit_eos(env: Env) -> Result:
    """The same count-and-emit with ``processing_guarantee="exactly_once"``: outputs,
    changelog and offsets in one transaction per checkpoint."""
    return _count(env, "count_emit_eos", count_emit_eos, "exactly_once", emit=True)


def processes(env: Env) -> Result:
    """Every core: the stateless JSON pass-through app run with ``streamer worker APP
    --processes 1`` and then ``--processes 2`` (4 partitions; a supervisor and two worker
    children in the group). Once the group is stable, ``messages`` records are produced
    and the rate read from outside (output end offsets, 10% to 90%); the scale factor of
    two processes over one, and the CPU seconds the broker and the workers took while
    processing (the broker and the producing thread share the machine's cores)."""
    one = run_processes(env.brokers, 1, env.messages, env.state_dir, env.consumer_config)
    two = run_processes(env.brokers, 2, env.messages, env.state_dir, env.consumer_config)
    return processes_result("processes", _description(processes), one, two)


def recovery(env: Env) -> Result:
    """Table recovery rate: ``messages`` records (distinct keys, JSON int values) produced
    straight to ``<app>-counts-changelog``, then a fresh worker with an empty state directory
    restores them into RocksDB; records/s from the first partition assigned to the last one
    restored (4 partitions restore in parallel)."""
    n = env.messages
    topics = Topics(env.brokers)
    try:
        app_id = unique("recovery")
        topics.groups.append(app_id)
        src = topics.create(unique("recovery-in"), PARTITIONS)
        changelog = topics.create(
            f"{app_id}-counts-changelog", PARTITIONS, {"cleanup.policy": "compact"}
        )
        produce(
            env.brokers,
            changelog,
            ((f"key-{i}".encode(), b"%d" % (i % 1000 + 1)) for i in range(n)),
        )
        job = Job(
            "recovery",
            env.brokers,
            {
                "src": src,
                "n": n,
                "partitions": PARTITIONS,
                "app_id": app_id,
                "state_dir": str(env.state_dir),
                "consumer_config": env.consumer_config,
                "timeout": env.timeout(n),
            },
        )
        out = run_job(job, timeout=env.timeout(n) + 60)
    finally:
        topics.cleanup()
    return _ok("recovery", recovery, out)


def latency_messages(env: Env) -> int:
    return min(max(env.messages // 20, 400), 30_000)


def _latency_run(
    env: Env, work: str, n: int, **params: Any
) -> tuple[dict[str, Any], list[float], float]:
    """One latency run; with ``guarantee="exactly_once"`` the latencies are those of a
    read_committed reader (see :class:`bench.kafka_io.CommittedReader`)."""
    topics = Topics(env.brokers)
    offered: list[float] = []
    reader: CommittedReader | None = None
    try:
        src = topics.create(unique(f"latency-{work}-in"), PARTITIONS)
        dst = topics.create(unique(f"latency-{work}-out"), PARTITIONS)
        app_id = unique(f"latency-{work}")
        topics.groups.append(app_id)
        job = Job(
            work,
            env.brokers,
            {
                "src": src,
                "dst": dst,
                "n": n,
                "partitions": PARTITIONS,
                "app_id": app_id,
                "group": app_id,
                "state_dir": str(env.state_dir),
                "consumer_config": env.consumer_config,
                "timeout": env.timeout(n, floor_rate=200.0),
                **params,
            },
        )
        if params.get("guarantee") == "exactly_once":
            reader = CommittedReader(env.brokers, dst, PARTITIONS, n)

        def start_load() -> None:
            time.sleep(LATENCY_WARMUP)  # let the first fetch start: measure steady state
            offered.append(produce_at_rate(env.brokers, src, n, LATENCY_RATE))

        out = run_job(job, timeout=env.timeout(n, floor_rate=200.0) + 60, on_ready=start_load)
        latencies = reader.close() if reader is not None else read_latencies(env.brokers, dst, n)
    finally:
        if reader is not None:
            reader.close(0)
        topics.cleanup()
    return out, latencies, offered[0] if offered else 0.0


def latency(env: Env) -> Result:
    """End-to-end latency at a fixed moderate rate: 2,000 records/s produced, each with its
    produce time in the value (load starts 1 s after the worker owns its partitions); latency
    = the output record's timestamp (set when the worker produced it) minus that time, p50/p99
    in ms. messages/20 records (400 to 30,000). The raw loop is measured the same way
    (``raw_p50_ms``/``raw_p99_ms``). Then once more with ``exactly_once`` at its default
    commit interval, read by a read_committed consumer: ``eos_p50_ms``/``eos_p99_ms`` run
    from the produce time to when the output became readable (its transaction committed)."""
    n = latency_messages(env)
    out, latencies, offered = _latency_run(env, "stateless", n)
    raw_out, raw_latencies, _ = _latency_run(env, "raw", n)
    _, eos_latencies, _ = _latency_run(env, "stateless", n, guarantee="exactly_once")
    result = _ok(
        "latency",
        latency,
        out,
        outputs=len(latencies),
        raw_p50_ms=round(percentile(raw_latencies, 0.50), 2),
        raw_p99_ms=round(percentile(raw_latencies, 0.99), 2),
        raw_peak_rss_mb=raw_out.get("peak_rss_mb"),
        eos_p50_ms=round(percentile(eos_latencies, 0.50), 2),
        eos_p99_ms=round(percentile(eos_latencies, 0.99), 2),
        eos_outputs=len(eos_latencies),
    )
    result.rate = round(offered, 1)  # the load latency was measured at
    result.extra["processing_rate"] = round(float(out["rate"]), 1)
    result.p50_ms = round(percentile(latencies, 0.50), 2)
    result.p99_ms = round(percentile(latencies, 0.99), 2)
    if len(latencies) < n or len(eos_latencies) < n:
        result.status = "failed"
        result.reason = (
            f"only {len(latencies)} (at-least-once) and {len(eos_latencies)} (exactly-once, "
            f"read_committed) of {n} outputs read back"
        )
    return result


def backlog_window(env: Env) -> float:
    return min(max(env.messages / 20_000, 3.0), 20.0)


def backlog_rss(env: Env) -> Result:
    """RSS under a large backlog: ``messages`` records of about 1.1 KB pre-produced, a slow
    agent (awaits 1 ms per event, concurrency 1, 4 partitions) reads for messages/20,000 s
    (3 to 20 s); RSS sampled every 50 ms; reports start (first event), peak and end MB. Flat
    is the goal: the bounded prefetch and lane buffers, not the backlog, set the memory."""
    n = env.messages
    topics = Topics(env.brokers)
    try:
        src = topics.create(unique("backlog-in"), PARTITIONS)
        produce(env.brokers, src, json_records(n, pad=BACKLOG_PAD))
        app_id = unique("backlog")
        topics.groups.append(app_id)
        window = backlog_window(env)
        job = Job(
            "backlog",
            env.brokers,
            {
                "src": src,
                "n": n,
                "partitions": PARTITIONS,
                "app_id": app_id,
                "state_dir": str(env.state_dir),
                "consumer_config": env.consumer_config,
                "delay": BACKLOG_DELAY,
                "window": window,
                "timeout": window + 120,
            },
        )
        out = run_job(job, timeout=window + 180)
    finally:
        topics.cleanup()
    return _ok("backlog_rss", backlog_rss, out, backlog_mb=round(n * 1.15 * 1e3 / 2**20, 1))


SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline,
    "stateless_json": stateless_json,
    "stateless_batch": stateless_batch,
    "stateless_pydantic": stateless_pydantic,
    "io_conc1": io_conc1,
    "io_conc8": io_conc8,
    "count_alo": count_alo,
    "count_eos": count_eos,
    "count_emit_alo": count_emit_alo,
    "count_emit_eos": count_emit_eos,
    "processes": processes,
    "recovery": recovery,
    "latency": latency,
    "backlog_rss": backlog_rss,
}
"""Every scenario, in the order they run (the baseline first: the others are compared to it)."""


def run_scenario(name: str, env: Env) -> Result:
    """Run one scenario; an exception becomes a "failed" result (the others still run)."""
    fn = SCENARIOS[name]
    started = time.monotonic()
    try:
        result = fn(env)
    except Exception as exc:
        reason = str(exc) if not isinstance(exc, ChildError) else f"{exc}\n{exc.trace}"
        result = Result(name, _description(fn), status="failed", reason=reason)
    result.extra["wall_seconds"] = round(time.monotonic() - started, 1)
    return result
