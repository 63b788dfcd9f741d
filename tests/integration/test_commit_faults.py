"""Commits that fail on cue (through the fault-injecting backend, on the real broker): a
final commit that is fenced, aborted or never confirmed; offsets the transaction cannot
send; deliveries that fail for reasons that are not the record's; offset commits refused
under at-least-once. After each, outputs read back with read_committed must cover every
committed input (nothing lost) exactly once under exactly-once, and a clean worker must
finish the job with every output once."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Producer

from streamer import App, CommitFailed
from streamer.kafka.backend import ConfluentBackend
from streamer.testing.faults import (
    DeliveryFailure,
    Fault,
    FaultyBackend,
    OffsetCommitFailure,
    TransactionFailure,
)
from streamer.worker import Worker
from streamer.worker.guarantee import transactional_id
from streamer.worker.transactions import INIT_ATTEMPTS, ProducerFenced
from tests.kafkatools import (
    all_committed,
    assert_counts_exact,
    committed,
    count_app,
    echo_app,
    paced,
    produce,
    read_all,
    run_worker_until,
)

RECORDS = 400


def _echo_app(bootstrap: str, unique_name: Callable[[str], str], guarantee: str,
              src: str, sink: str) -> App:  # fmt: skip
    return echo_app(bootstrap, unique_name("faults"), guarantee, src, sink)


def _inputs(bootstrap: str, src: str) -> dict[int, dict[int, str]]:
    """Input values by partition and offset."""
    by_partition: dict[int, dict[int, str]] = {0: {}, 1: {}}
    for m in read_all(bootstrap, src, expect=RECORDS):
        by_partition[m.partition()][m.offset()] = m.value().decode()
    return by_partition


def _check_nothing_lost(bootstrap: str, app: App, src: str, sink: str, *, exact: bool) -> None:
    """Every input below a committed offset has its output (read_committed); under
    exactly-once no output appears twice."""
    offsets = committed(bootstrap, app.group_id, src, 2)
    outputs = Counter(m.value().decode() for m in read_all(bootstrap, sink, idle=2))
    for partition, values in _inputs(bootstrap, src).items():
        for offset, value in values.items():
            if offset < offsets[partition]:
                assert outputs[value] >= 1, f"{value} ({partition}@{offset}) committed, lost"
    if exact:
        assert all(n == 1 for n in outputs.values()), [v for v, n in outputs.items() if n > 1]


def _some_committed(bootstrap: str, group: str, src: str) -> Callable[[], bool]:
    return paced(lambda: any(o > 0 for o in committed(bootstrap, group, src, 2).values()))


def _finish_cleanly(bootstrap: str, app: App, src: str, sink: str, *, exact: bool) -> None:
    """A fault-free worker processes the rest: every input has its output (once)."""
    worker = Worker(app, handle_signals=False, backend=ConfluentBackend())
    asyncio.run(run_worker_until(worker, all_committed(bootstrap, app.group_id, src, 2)))
    outputs = Counter(m.value().decode() for m in read_all(bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)}
    if exact:
        assert all(n == 1 for n in outputs.values())


@pytest.mark.parametrize("kind", ["fenced", "abortable", "timeout"])
def test_a_failed_final_commit_exits_non_zero_and_commits_nothing_later(
    kafka_bootstrap: str, create_topic, unique_name, kind: str
) -> None:
    """The final commit fails while outputs and offsets are staged: the worker must not
    commit them in a later transaction (the revoke fired by leaving the group), must exit
    with CommitFailed, and must lose nothing."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    cue = threading.Event()
    fault = TransactionFailure(kind, cue=cue, times=None if kind == "timeout" else 1)  # type: ignore[arg-type]
    worker = Worker(app, handle_signals=False, backend=FaultyBackend(ConfluentBackend(), fault))

    with pytest.raises(CommitFailed, match="final commit failed"):
        asyncio.run(
            run_worker_until(
                worker, _some_committed(kafka_bootstrap, app.group_id, src), then=cue.set
            )
        )
    assert fault.fired.is_set()
    _check_nothing_lost(kafka_bootstrap, app, src, sink, exact=True)
    _finish_cleanly(kafka_bootstrap, app, src, sink, exact=True)


def test_offsets_the_transaction_cannot_send_are_rewound_and_redone_once(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fault = TransactionFailure("abortable", call="send_offsets", nth=3, times=2)
    backend = FaultyBackend(ConfluentBackend(), fault)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fault.count == 2
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_records_purged_by_an_abort_do_not_fail_the_next_checkpoint(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """Aborting a transaction purges its records still queued or in flight (outputs and
    changelog records); their delivery reports, served during the abort or by a later poll,
    say "purged". They belong to the aborted work, which is redone: they must not fail the
    next checkpoint (and so on, each abort purging the redone work's records), nor the final
    commit. No checkpoint fails for a purged record; every count once, read_committed."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = count_app(kafka_bootstrap, unique_name("purged"), "exactly_once", src, sink,
                    shutdown_timeout=5)  # fmt: skip
    keys = [f"k{i % 13}" for i in range(RECORDS)]
    produce(kafka_bootstrap, src, [(k.encode(), b"1") for k in keys])
    fault = TransactionFailure("abortable", call="send_offsets", nth=1)
    backend = FaultyBackend(ConfluentBackend(), fault)
    worker = Worker(app, handle_signals=False, backend=backend)
    with caplog.at_level(logging.WARNING, logger="streamer.checkpoint"):
        asyncio.run(run_worker_until(worker, all_committed(kafka_bootstrap, app.group_id, src, 2)))
    assert fault.count == 1
    failed = [r.getMessage() for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert any("injected abortable" in line for line in failed), failed
    # (A busy broker may fail a checkpoint of its own; never one of the purged records.)
    assert not [line for line in failed if "Purged" in line], failed
    assert_counts_exact(kafka_bootstrap, sink, keys)


def test_a_producer_fenced_mid_run_is_replaced_and_nothing_is_lost_or_doubled(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    """Another producer registers the worker's transactional.id while it runs (a zombie
    coming back, or the broker bumping the epoch after a transaction timed out): the
    worker's producer is fenced, and confluent-kafka raises that fatal error from its next
    ``poll`` too. The worker replaces the producer, redoes the aborted work and goes on;
    every output once, read_committed."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = echo_app(kafka_bootstrap, unique_name("fenced"), "exactly_once", src, sink,
                   instance_id="w1")  # fmt: skip
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fenced = threading.Event()
    txn_id = transactional_id(app.id, app.settings)

    def fence() -> None:
        imposter = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": txn_id})
        imposter.init_transactions(60)  # bumps the epoch: the worker's producer is fenced
        fenced.set()

    fencing = threading.Thread(target=fence)
    some = _some_committed(kafka_bootstrap, app.group_id, src)
    every = all_committed(kafka_bootstrap, app.group_id, src, 2)

    def done() -> bool:
        if not fencing.is_alive() and not fenced.is_set() and some():
            fencing.start()
        return fenced.is_set() and every()

    asyncio.run(run_worker_until(Worker(app, handle_signals=False), done))
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_delivery_that_fails_for_no_fault_of_the_record_is_redone_not_dead_lettered(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    """A delivery timing out is the broker's trouble, not the agent's: the checkpoint
    fails, everything since the last commit is processed again, no dead letter is sent."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, guarantee, src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fault: Fault = DeliveryFailure(sink, code=KafkaError._MSG_TIMED_OUT, nth=50, times=3)
    backend = FaultyBackend(ConfluentBackend(), fault)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fault.count == 3
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)}
    if guarantee == "exactly_once":
        assert set(outputs.values()) == {1}
    assert not read_all(kafka_bootstrap, f"{app.id}-echo-dlq", idle=1, timeout=5)


def test_refused_offset_commits_under_at_least_once_lose_nothing(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "at_least_once", src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fault = OffsetCommitFailure(nth=2, times=3)
    backend = FaultyBackend(ConfluentBackend(), fault)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fault.count == 3
    _check_nothing_lost(kafka_bootstrap, app, src, sink, exact=False)


def test_a_replaced_producer_whose_start_times_out_tries_again_and_loses_nothing(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """A fenced checkpoint replaces the producer; the new one's init_transactions times out
    twice (the coordinator still aborting the old transaction, as after a broker restart):
    it is tried again, and every output arrives exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fenced = TransactionFailure("fenced", nth=3)
    slow_start = TransactionFailure("timeout", call="init", nth=2, times=2)  # not the first
    backend = FaultyBackend(ConfluentBackend(), fenced, slow_start)
    with caplog.at_level("WARNING", logger="streamer.transactions"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fenced.count == 1 and slow_start.count == 2
    assert "is not confirmed yet" in caplog.text and "attempt 3 of 4" in caplog.text
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_a_replaced_producer_waits_for_a_broker_that_stays_away_longer_than_its_attempts(
    kafka_bootstrap: str, create_topic, unique_name, caplog: pytest.LogCaptureFixture
) -> None:
    """After a fencing mid-run, the new producer's start times out more often than one
    start tries (the broker still away or loading after a restart, for minutes): the
    worker keeps trying, off its event loop, rather than stopping; every output once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fenced = TransactionFailure("fenced", nth=3)
    away = TransactionFailure("timeout", call="init", nth=2, times=INIT_ATTEMPTS + 2)
    backend = FaultyBackend(ConfluentBackend(), fenced, away)
    with caplog.at_level("WARNING", logger="streamer.checkpoint"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fenced.count == 1 and away.count == INIT_ATTEMPTS + 2
    assert "the new producer cannot start transactions yet" in caplog.text
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


class _CountingProducers(FaultyBackend):
    """Counts the producers the worker builds."""

    producers = 0

    def producer(self, config: dict) -> Producer:  # type: ignore[override]
        self.producers += 1
        return super().producer(config)  # type: ignore[return-value]


def test_a_producer_given_up_while_its_start_is_in_flight_does_not_fence_its_successor(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    """After a fencing mid-run, the new producer's start times out on every attempt while
    its last request is still on its way (librdkafka carries a timed-out init on in the
    background). The worker gives that producer up and starts another: the abandoned
    request must not land after the successor registered (it would fence it, and a broker
    restart under load turned this into a cycle of fenced producers). Three producers in
    all (the first, the one given up, its successor), every output once. A stable
    instance id gives every producer of the worker the same transactional.id."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = echo_app(kafka_bootstrap, unique_name("in-flight"), "exactly_once", src, sink,
                   instance_id="w1")  # fmt: skip
    produce(
        kafka_bootstrap, src, [(f"k{i % 13}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    )
    fenced = TransactionFailure("fenced", nth=3)
    in_flight = TransactionFailure("timeout", call="init", nth=2, times=INIT_ATTEMPTS,
                                   in_flight=True)  # fmt: skip
    backend = _CountingProducers(ConfluentBackend(), fenced, in_flight)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                     all_committed(kafka_bootstrap, app.group_id, src, 2)))  # fmt: skip
    assert fenced.count == 1 and in_flight.count == INIT_ATTEMPTS
    assert backend.producers == 3, f"{backend.producers} producers: the successor was fenced"
    outputs = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=RECORDS))
    assert set(outputs) == {f"v{i}" for i in range(RECORDS)} and set(outputs.values()) == {1}


def test_transactions_that_never_start_stop_the_worker_in_one_line(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app = _echo_app(kafka_bootstrap, unique_name, "exactly_once", src, sink)
    never = TransactionFailure("timeout", call="init", times=None)
    backend = FaultyBackend(ConfluentBackend(), never)
    with pytest.raises(ProducerFenced) as raised:
        asyncio.run(run_worker_until(Worker(app, handle_signals=False, backend=backend),
                         lambda: False, timeout=60))  # fmt: skip
    message = str(raised.value)
    assert "\n" not in message and never.count == INIT_ATTEMPTS
    assert f"cannot start transactions as '{app.id}" in message and kafka_bootstrap in message
    assert f"(tried {INIT_ATTEMPTS} times)" in message
