"""The worker's /metrics, /health and /ready on the real broker, scraped over HTTP while a
worker runs in this process."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streamer import App, Stream
from streamer.worker import Worker
from tests.kafkatools import produce, wait_until_async

PARTITIONS = 4
EVENTS = 20_000
CHANGELOG_RECORDS = 200_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (errors included); raises OSError (URLError) when nobody
    listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` as {sample name: {sorted labels: value}}."""
    status, text = get(f"{base}/metrics")
    assert status == 200, text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[str, dict[Any, float]], name: str) -> float:
    return sum(samples.get(name, {}).values())


def test_metrics_count_what_was_processed_and_lag_falls_to_zero(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("metrics-in", partitions=PARTITIONS)
    out = create_topic("metrics-out", partitions=PARTITIONS)
    port = free_port()
    app = App(unique_name("metrics"), brokers=kafka_bootstrap, commit_interval=0.3, web_port=port)
    source = app.topic(src, key_type=str, value_type=str, partitions=PARTITIONS)
    sink = app.topic(out, key_type=str, value_type=str, partitions=PARTITIONS)
    gate = asyncio.Event()  # the agent waits on it, so the test can see a backlog first

    @app.agent(source, sink=[sink], concurrency=2)
    async def echo(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            await gate.wait()
            yield event.value.upper()

    produce(kafka_bootstrap, src, ((f"k{i % 300}".encode(), b"v%d" % i) for i in range(EVENTS)))
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        worker = Worker(app, handle_signals=False)
        task = asyncio.create_task(worker.run())
        last: dict[str, Any] = {}  # the latest scrape

        async def lags() -> dict[Any, float] | None:
            """The consumer lag per partition in a new scrape; None while nobody listens."""
            try:
                samples = await asyncio.to_thread(scrape, base)
            except OSError:  # URLError included: not listening yet
                return None
            last.clear()
            last.update(samples)
            return dict(samples.get("streamer_consumer_lag", {}))

        async def backlogged() -> bool:
            # Agents blocked, partitions paused at the lane buffer: a real backlog.
            lag = await lags()
            return lag is not None and len(lag) == PARTITIONS and sum(lag.values()) > 0

        async def done() -> bool:
            lag = await lags()
            return (
                lag is not None
                and total(last, "streamer_events_in_total") == EVENTS
                and total(last, "streamer_events_out_total") == EVENTS
                and len(lag) == PARTITIONS
                and sum(lag.values()) == 0
            )

        try:
            await wait_until_async(backlogged, lambda: f"no backlog; last scrape {last}", task=task)
            backlog = dict(last)
            gate.set()
            await wait_until_async(done, lambda: f"not done; last scrape {last}", task=task)
            status, _ = await asyncio.to_thread(get, f"{base}/health")
            return backlog, dict(last), status
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)

    backlog, final, health = asyncio.run(scenario())

    assert health == 200
    assert total(backlog, "streamer_consumer_lag") > 0
    assert total(backlog, "streamer_paused_partitions") > 0  # backpressure, while blocked
    assert final["streamer_events_in_total"] == {(("agent", "echo"), ("topic", src)): float(EVENTS)}
    assert final["streamer_events_out_total"] == {(("topic", out),): float(EVENTS)}
    assert final["streamer_consumer_lag"] == {
        (("partition", str(p)), ("topic", src)): 0.0 for p in range(PARTITIONS)
    }
    # Sampled latency: at least the first hand-out of each of the 8 lanes, about 1 in 16.
    timed = total(final, "streamer_processing_seconds_count")
    assert PARTITIONS * 2 <= timed <= EVENTS
    assert total(final, "streamer_commit_seconds_count") > 0
    assert total(final, "streamer_commit_failures_total") == 0
    assert final["streamer_rebalances_total"][(("kind", "assign"),)] >= 1
    assert total(final, "streamer_assigned_partitions") == PARTITIONS
    assert total(final, "streamer_paused_partitions") == 0


def test_ready_only_once_a_large_table_is_restored(
    kafka_bootstrap: str, kafka_admin: AdminClient, create_topic, unique_name, tmp_path: Path
) -> None:
    src = create_topic("ready-in", partitions=2)
    app_id = unique_name("ready")
    changelog = f"{app_id}-counts-changelog"
    futures = kafka_admin.create_topics(
        [NewTopic(changelog, num_partitions=2, config={"cleanup.policy": "compact"})]
    )
    futures[changelog].result(30)
    try:
        _check_ready_during_recovery(kafka_bootstrap, app_id, src, changelog, tmp_path)
    finally:
        kafka_admin.delete_topics([changelog])


def _check_ready_during_recovery(
    bootstrap: str, app_id: str, src: str, changelog: str, state_dir: Path
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for i in range(CHANGELOG_RECORDS):
        while True:
            try:
                producer.produce(changelog, b"%d" % (i % 7), f"key-{i}".encode(), partition=i % 2)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0

    port = free_port()
    app = App(app_id, brokers=bootstrap, state_dir=state_dir, web_port=port)
    source = app.topic(src, key_type=str, value_type=str, partitions=2)
    counts = app.table("counts", default=int, value_type=int)

    @app.agent(source)
    async def count(stream: Stream) -> None:
        async for event in stream:
            counts[event.key] += 1

    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[int, dict[str, Any]]] = []
    stop_polling = threading.Event()

    def poll_ready() -> None:
        while not stop_polling.is_set():
            try:
                status, body = get(f"{base}/ready")
                if not stop_polling.is_set():  # set before the worker stops: keep only
                    answers.append((status, json.loads(body)))  # answers from its run
            except OSError:  # URLError included
                pass  # not listening yet, or closing
            time.sleep(0.02)  # pacing: /ready sampled all along the run, not a wait

    async def scenario() -> dict[str, Any]:
        worker = Worker(app, handle_signals=False)
        task = asyncio.create_task(worker.run())
        try:
            await wait_until_async(
                lambda: answers and answers[-1][0] == 200,
                lambda: f"never ready: {answers[-3:]}",
                task=task,
            )
            return await asyncio.to_thread(scrape, base)
        finally:
            stop_polling.set()
            worker.stop()
            await asyncio.wait_for(task, 60)

    poller = threading.Thread(target=poll_ready, daemon=True)
    poller.start()
    try:
        samples = asyncio.run(scenario())
    finally:
        stop_polling.set()
        poller.join(10)

    restoring = [body for status, body in answers if status == 503 and "not_ready" in body]
    assert restoring, f"/ready never said 503 while restoring: {answers[:5]}"
    first = restoring[0]
    assert set(first["not_ready"]) <= {f"{src}[0]", f"{src}[1]"}
    assert set(first["not_ready"].values()) == {"restoring"}
    assert first["ready"] is False
    # Once 200, it stays 200 while the worker runs.
    first_ok = next(i for i, (status, _) in enumerate(answers) if status == 200)
    assert all(status == 200 for status, _ in answers[first_ok:])
    assert answers[first_ok][1] == {"ready": True, "assigned": 2}
    restored = samples["streamer_recovery_restored_records"]
    assert sum(restored.values()) == CHANGELOG_RECORDS
    assert total(samples, "streamer_recovery_remaining_records") == 0
