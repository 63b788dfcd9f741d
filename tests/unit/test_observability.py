"""Metrics, the HTTP endpoints and JSON logs without a broker: probes, commit timing,
readiness, the responses, and the log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from streamer import App, Stream
from streamer.logs import JsonFormatter, configure_logging, label_process
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.partition import PartitionState, WorkerStats
from streamer.worker.probes import SAMPLE_EVERY, CommitTimer, LaneProbe
from streamer.worker.readiness import Readiness
from streamer.worker.web import STALL_AFTER, WebServer, respond


@pytest.fixture
def app() -> App:
    app = App("observed", brokers="unused:1")
    source = app.topic("in", key_type=str, value_type=str, partitions=2)

    @app.agent(source)
    async def work(stream: Stream) -> None:
        async for _ in stream:
            pass

    return app


def _state(partition: int) -> PartitionState:
    return PartitionState("in", partition, lambda outputs: None, WorkerStats())


def _sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_probe_counts_every_hand_out_and_times_one_in_sample_every() -> None:
    registry = CollectorRegistry()
    counter = Counter("handed", "handed", registry=registry)
    latency = Histogram("latency", "latency", registry=registry)
    probe = LaneProbe(counter, latency)
    timed = 0
    for _ in range(SAMPLE_EVERY * 4):
        probe.taken += 1  # what Lane._taken does inline
        if probe.taken >= probe.due:
            probe.start()
        if probe.started:  # what Lane.complete_current does
            probe.stop()
            timed += 1
    assert timed == 4  # the first hand-out, then every SAMPLE_EVERY-th
    probe.flush()
    probe.flush()  # idempotent: only what was handed out since
    assert registry.get_sample_value("handed_total") == SAMPLE_EVERY * 4
    assert registry.get_sample_value("latency_count") == 4


def test_metrics_live_in_their_own_registry(app: App) -> None:
    one, two = WorkerMetrics(app, {}), WorkerMetrics(app, {})
    one.dead_lettered("work", "ValueError")
    assert _sample(one, "streamer_dead_lettered_total", agent="work", reason="ValueError") == 1
    assert _sample(two, "streamer_dead_lettered_total", agent="work", reason="ValueError") is None
    assert REGISTRY.get_sample_value("streamer_dead_lettered_total") is None


def test_commit_timer_observes_successes_and_counts_failures(app: App) -> None:
    metrics = WorkerMetrics(app, {})
    timer: CommitTimer = metrics.commit_timer
    with timer:
        pass
    with pytest.raises(RuntimeError), timer:
        raise RuntimeError("broker gone")
    timer.failed("offset_commit_refused")
    assert _sample(metrics, "streamer_commit_seconds_count") == 1
    assert _sample(metrics, "streamer_commit_failures_total", reason="RuntimeError") == 1
    failed = _sample(metrics, "streamer_commit_failures_total", reason="offset_commit_refused")
    assert failed == 1


def test_rebalance_callbacks_are_counted_when_they_carry_partitions(app: App) -> None:
    metrics = WorkerMetrics(app, {})
    calls: list[list[object]] = []
    on_assign = metrics.rebalance_callback("assign", lambda _c, parts: calls.append(parts))
    on_assign(None, [])
    on_assign(None, ["tp"])
    assert calls == [[], ["tp"]]
    assert _sample(metrics, "streamer_rebalances_total", kind="assign") == 1


def test_readiness_needs_assigned_and_restored_partitions(app: App) -> None:
    states: dict[tuple[str, int], PartitionState] = {}
    metrics = WorkerMetrics(app, states)
    assert Readiness(states, metrics.recovery).check() == (
        False,
        {"ready": False, "assigned": 0, "reason": "no partitions assigned"},
    )
    states[("in", 0)], states[("in", 1)] = _state(0), _state(1)
    states[("in", 0)].ready.set()
    ready, detail = Readiness(states, metrics.recovery).check()
    assert not ready
    assert detail["not_ready"] == {"in[1]": "restoring"}
    states[("in", 1)].ready.set()
    assert Readiness(states, metrics.recovery).check() == (True, {"ready": True, "assigned": 2})


def test_responses(app: App) -> None:
    states = {("in", 0): _state(0)}
    metrics = WorkerMetrics(app, states)
    assert respond(metrics, Readiness(states, {}), "/health")[0] == 200
    status, content_type, body = respond(metrics, Readiness(states, {}), "/ready?verbose=1")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["not_ready"] == {"in[0]": "restoring"}
    states[("in", 0)].ready.set()
    assert respond(metrics, Readiness(states, {}), "/ready")[0] == 200
    status, content_type, body = respond(metrics, Readiness(states, {}), "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"streamer_events_in", "streamer_consumer_lag", "streamer_worker_info"} <= names
    assert respond(metrics, Readiness(states, {}), "/nope")[0] == 404

    metrics._beat -= STALL_AFTER + 1  # the pump has not turned for too long
    status, _, body = respond(metrics, Readiness(states, {}), "/health")
    assert status == 503 and json.loads(body)["status"] == "stalled"

    assert (
        respond(WorkerMetrics(app, states, enabled=False), Readiness(states, {}), "/metrics")[0]
        == 404
    )


def test_web_server_serves_over_http_and_stops(app: App) -> None:
    metrics = WorkerMetrics(app, {})

    async def scenario() -> tuple[int, bytes]:
        server = WebServer(metrics, Readiness({}, {}), 0, host="127.0.0.1")
        server.start()
        try:
            url = f"http://127.0.0.1:{server.port}/health"
            with await asyncio.to_thread(urllib.request.urlopen, url, None, 5) as response:
                return response.status, response.read()
        finally:
            await server.close()

    assert asyncio.run(scenario()) == (200, b'{"status":"alive"}\n')


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streamer.worker", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


@pytest.fixture
def formatter() -> JsonFormatter:
    return JsonFormatter()


def test_json_log_lines_name_their_partitions(formatter: JsonFormatter) -> None:
    line = json.loads(formatter.format(_record("agent 'a' failed on orders[3]@17; skipped")))
    assert set(line) == {"time", "level", "logger", "message", "partition"}
    assert line["level"] == "WARNING" and line["logger"] == "streamer.worker"
    assert line["partition"] == "orders[3]"
    assert line["time"].endswith("+00:00")

    several = json.loads(formatter.format(_record("assigned orders[0,1], words[3]")))
    assert several["partitions"] == ["orders[0]", "orders[1]", "words[3]"]
    from_extra = json.loads(formatter.format(_record("lagging", topic="orders", partition=2)))
    assert from_extra["partition"] == "orders[2]"
    assert "partition" not in json.loads(formatter.format(_record("worker started")))


def test_json_log_lines_carry_tracebacks(formatter: JsonFormatter) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert "ValueError: bad value" in line["exception"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_child_of_processes_names_itself_in_every_log_line(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers.clear()
    try:
        configure_logging("INFO", log_format)  # type: ignore[arg-type]
        label_process("process-1")
        logging.getLogger("streamer.worker").info("assigned orders[0]")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if log_format == "text":
        assert line.endswith("INFO    [process-1] streamer.worker: assigned orders[0]"), line
    else:
        fields = json.loads(line)
        assert fields["worker_process"] == "process-1" and fields["message"] == "assigned orders[0]"
