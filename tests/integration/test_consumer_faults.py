"""The group consumer failing on cue (through the fault-injecting backend, on the real
broker): a rewind whose committed offsets cannot be read while the group coordinator is
away, and a consumer fenced as a static member (librdkafka's one fatal consumer error,
which a broker restart can provoke). The worker rides out both without restarting; outputs
read back with read_committed come out exactly once under exactly-once. A consumer fenced
again and again stops the worker with one line naming the shared instance id."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from streamer import App, KafkaOperationError
from streamer.kafka.backend import ConfluentBackend
from streamer.testing.faults import (
    CommittedFailure,
    ConsumeFailure,
    FaultyBackend,
    Redelivery,
    StuckClose,
    TransactionFailure,
)
from streamer.worker import Worker
from streamer.worker.membership import CLOSE_TIMEOUT, MAX_REJOINS
from streamer.worker.transactions import INIT_ATTEMPTS
from tests.kafkatools import (
    all_committed,
    assert_counts_exact,
    count_app,
    echo_app,
    produce,
    read_all,
    run_worker_until,
)

RECORDS = 300


def _echo_app(bootstrap: str, unique_name: Callable[[str], str], guarantee: str,
              src: str, sink: str, **settings: object) -> App:  # fmt: skip
    return echo_app(bootstrap, unique_name("consumer-faults"), guarantee, src, sink, **settings)


def _produce_inputs(bootstrap: str, src: str) -> None:
    produce(bootstrap, src, [(f"k{i % 11}".encode(), f"v{i}".encode()) for i in range(RECORDS)])


def _outputs(bootstrap: str, sink: str) -> Counter[str]:
    return Counter(m.value().decode() for m in read_all(bootstrap, sink, expect=RECORDS))


def test_a_rewind_waits_for_the_group_coordinator_and_then_redoes_the_work_once(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    """A checkpoint fails; the rewind's read of the committed offsets then fails five times
    (NOT_COORDINATOR, as while a broker restarts). The worker must not crash nor process
    anything from a guessed position: it retries until the coordinator answers, then
    redoes the aborted work exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    _produce_inputs(kafka_bootstrap, src)
    abort = TransactionFailure("abortable", call="send_offsets", nth=3)
    away = CommittedFailure(app.group_id, times=5)
    backend = FaultyBackend(ConfluentBackend(), abort, away)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert abort.count == 1 and away.count == 5
    outputs = _outputs(kafka_bootstrap, sink)
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_fenced_consumer_is_replaced_without_losing_or_doubling_anything(
    kafka_bootstrap: str,
    create_topic,
    unique_name,
    guarantee: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The consumer fails fatally (a static member fenced) with work in flight: the worker
    gives up its partitions uncommitted, joins again with a new consumer, and finishes."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, guarantee, src, sink, instance_id="w-0")
    _produce_inputs(kafka_bootstrap, src)
    fenced = ConsumeFailure(app.group_id, code=KafkaError._FATAL, nth=40)
    backend = FaultyBackend(ConfluentBackend(), fenced)
    with caplog.at_level(logging.WARNING, logger="streamer.worker"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fenced.count == 1
    assert any("joining the group" in r.getMessage() for r in caplog.records)
    outputs = _outputs(kafka_bootstrap, sink)
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)}
    if guarantee == "exactly_once":
        assert set(outputs.values()) == {1}


def test_a_rejoin_waits_for_a_producer_that_cannot_start_for_longer_than_its_attempts(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer is fenced (the broker was away), and the rejoin's new producer then
    cannot start transactions for more tries than one start makes (the broker still
    loading after a restart): the worker keeps trying off its event loop instead of
    stopping, processes nothing meanwhile, and finishes with every output once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink, instance_id="w-1")
    _produce_inputs(kafka_bootstrap, src)
    fenced = ConsumeFailure(app.group_id, code=KafkaError._FATAL, nth=40)
    away = TransactionFailure("timeout", call="init", nth=2, times=INIT_ATTEMPTS + 2)
    backend = FaultyBackend(ConfluentBackend(), fenced, away)
    with caplog.at_level(logging.WARNING):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fenced.count == 1 and away.count == INIT_ATTEMPTS + 2
    assert "joining the group" in caplog.text
    assert "the new producer cannot start transactions yet" in caplog.text
    outputs = _outputs(kafka_bootstrap, sink)
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_a_worker_stopped_while_its_rejoin_producer_cannot_start_exits_cleanly(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the rejoin's new producer cannot start (the broker still away): the
    worker stops without an error (nothing failed to commit: the work given up at the
    rejoin was given up on purpose), and a worker started next finishes with every output
    exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink, instance_id="w-2")
    _produce_inputs(kafka_bootstrap, src)
    fenced = ConsumeFailure(app.group_id, code=KafkaError._FATAL, nth=40)
    away = TransactionFailure("timeout", call="init", nth=2, times=None)
    backend = FaultyBackend(ConfluentBackend(), fenced, away)
    with caplog.at_level(logging.WARNING):
        asyncio.run(run_worker_until(  # raises what the worker's run() raised: nothing here
            Worker(app, handle_signals=False, backend=backend),
            lambda: "the new producer cannot start transactions yet" in caplog.text,
        ))  # fmt: skip
    assert fenced.count == 1 and away.count >= INIT_ATTEMPTS
    asyncio.run(run_worker_until(Worker(app, handle_signals=False),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    outputs = _outputs(kafka_bootstrap, sink)
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_a_failed_consumer_whose_close_hangs_is_left_behind_and_its_callbacks_ignored(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer fails fatally and closing it then hangs (librdkafka's close of a
    consumer that failed while joining has been seen never to return): the worker waits
    CLOSE_TIMEOUT, says so, and joins with a new consumer. When the old close goes on at
    last, the revoke it fires on its own thread is ignored, not run against the new
    consumer's partitions. A dynamic member, so the old consumer still holds its partitions
    then (the group waits for it to leave): every output comes out exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    _produce_inputs(kafka_bootstrap, src)
    fenced = ConsumeFailure(app.group_id, code=KafkaError._FATAL, nth=40)
    release = threading.Event()
    stuck = StuckClose(app.group_id, release)
    backend = FaultyBackend(ConfluentBackend(), fenced, stuck)
    finished = all_committed(kafka_bootstrap, app.group_id, src, 2)

    def done() -> bool:
        if "did not close within" in caplog.text:
            release.set()  # the old close goes on now, on the thread it was left on
        return release.is_set() and finished()

    try:
        with caplog.at_level(logging.DEBUG, logger="streamer.worker"):
            asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                                         done))  # fmt: skip
    finally:
        release.set()
    assert fenced.count == 1 and stuck.count == 1
    warning = next(r for r in caplog.records if "did not close within" in r.getMessage())
    assert warning.levelno == logging.WARNING and f"{CLOSE_TIMEOUT:g}s" in warning.getMessage()
    assert "ignored the revoke callback of a replaced consumer" in caplog.text
    outputs = _outputs(kafka_bootstrap, sink)
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_a_consumer_fenced_again_and_again_stops_the_worker_naming_its_instance_id(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """Every new consumer is fenced at once (another process shares the instance id): the
    worker must not loop for ever; it stops with one line that says what to change."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink, instance_id="w-7")
    _produce_inputs(kafka_bootstrap, src)
    fenced = ConsumeFailure(app.group_id, code=KafkaError._FATAL,
                            times=None)  # fmt: skip
    worker = Worker(app, handle_signals=False, backend=FaultyBackend(ConfluentBackend(), fenced))
    with (
        caplog.at_level(logging.WARNING, logger="streamer.worker"),
        pytest.raises(KafkaOperationError, match=re.escape("group.instance.id 'w-7'")) as failure,
    ):
        asyncio.run(run_worker_until(worker, lambda: False, timeout=120))
    assert "\n" not in str(failure.value)
    rejoins = [r for r in caplog.records if "joining the group" in r.getMessage()]
    assert len(rejoins) == MAX_REJOINS  # then the next fatal error stopped it
    assert not read_all(kafka_bootstrap, sink, idle=1, timeout=5)  # nothing half-committed


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_records_the_client_hands_out_again_are_counted_once(
    kafka_bootstrap: str,
    create_topic,
    unique_name,
    guarantee: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The consumer hands out records it had handed out already (a clean-clone CI saw
    librdkafka go back to offset 0 of a partition after a broker restart, while the
    worker's table already held the counts of those records): the worker skips what it
    dispatched already, so a count in a table sees each record once, and every count
    emitted, read back with read_committed, is 1..n for its key, once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = count_app(kafka_bootstrap, unique_name("redelivery"), guarantee, src, sink)
    _produce_inputs(kafka_bootstrap, src)
    again = Redelivery(app.group_id, nth=2, times=3)
    backend = FaultyBackend(ConfluentBackend(), again)
    with caplog.at_level(logging.WARNING, logger="streamer.worker"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert again.count == 3
    assert_counts_exact(kafka_bootstrap, sink, (f"k{i % 11}" for i in range(RECORDS)))
    assert "the Kafka client went back to offset" in caplog.text
