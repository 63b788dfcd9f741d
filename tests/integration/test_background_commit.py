"""Exactly-once commits in the background, on the real broker: while the broker confirms a
transaction (held on cue by :class:`SlowTransaction`), the worker keeps processing, and the
events it completes meanwhile (writing the same table keys) go into the next transaction.

Each test reads the outputs back with read_committed and checks every key's counts are
1, 2, ..., n, each exactly once: nothing lost, nothing doubled, no count computed from a
table value that a commit in progress had hidden or that an aborted one left behind. A
restarted worker then carries on from the counts its RocksDB holds.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer import App, CommitFailed
from streamer.kafka.backend import ConfluentBackend
from streamer.testing.faults import FaultyBackend, SlowTransaction
from streamer.worker import Worker, committer
from tests.kafkatools import all_committed, produce, read_all, run_worker_until, wait_until

KEYS = 7
FIRST, SECOND = 140, 210  # records before and while a commit is held
# Seconds any worker run here may take: a hang guard, not a timing check (on a crushed
# machine a replaced producer or a late confirmation takes minutes).
HANG_GUARD = 400.0


def _count_app(bootstrap: str, app_id: str, src: str, sink: str, state_dir: Path,
               seen: list[str]) -> App:  # fmt: skip
    """Counts per key in a table and emits ``key:count``; notes each event it completes."""
    app = App(app_id, brokers=bootstrap, processing_guarantee="exactly_once",
              state_dir=state_dir, commit_interval=0.1, shutdown_timeout=5)  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=2)
    out = app.topic(sink, key_type=str, value_type=str, partitions=2)
    counts = app.table("counts", default=int, value_type=int)

    @app.agent(source, sink=[out])
    async def count(stream: Any) -> Any:
        async for event in stream:
            counts[event.key] += 1
            seen.append(event.value)
            yield event.key, f"{event.key}:{counts[event.key]}"

    return app


def _held_worker(
    bootstrap: str, app_id: str, src: str, sink: str, tmp_path: Path, then: Any = None
) -> tuple[App, list[str], SlowTransaction, Worker]:
    """The counting app with ``FIRST`` records waiting for it, and its worker whose first
    commit is held by a :class:`SlowTransaction` (that then fails as ``then``, if given).
    Returns the app, the values its agent completed, the fault and the worker.

    The first commit, not one armed once some records are processed: the worker commits
    every 0.1 s and the condition is looked at between its turns, so by the time the test
    saw the records processed their commit could be over, and a worker with nothing left to
    commit never commits again (a stress run waited 400 s for it)."""
    seen: list[str] = []
    app = _count_app(bootstrap, app_id, src, sink, tmp_path / "state", seen)
    produce(bootstrap, src, _records(0, FIRST))
    slow = SlowTransaction(threading.Event(), then=then)
    worker = Worker(app, handle_signals=False, backend=FaultyBackend(ConfluentBackend(), slow))
    return app, seen, slow, worker


def _records(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i % KEYS}".encode(), f"v{i}".encode()) for i in range(start, start + n)]


def _carry_on(bootstrap: str, app: App, src: str, sink: str, tmp_path: Path) -> None:
    """A fresh worker of the counting app, on the same state, until every record of
    ``src`` is committed."""
    again = _count_app(bootstrap, app.id, src, sink, tmp_path / "state", [])
    asyncio.run(
        run_worker_until(
            Worker(again, handle_signals=False, backend=ConfluentBackend()),
            all_committed(bootstrap, app.group_id, src, 2),
            timeout=HANG_GUARD,
        )
    )


def _check_counts(bootstrap: str, sink: str, total: int) -> None:
    """Every key's outputs, read_committed, are exactly 1..n once each (n summing to
    ``total``)."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for m in read_all(bootstrap, sink, expect=total):
        key, count = m.value().decode().split(":")
        by_key[key].append(int(count))
    for key, counts in by_key.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), (key, sorted(counts))
    assert sum(len(c) for c in by_key.values()) == total


def _hold_then(
    bootstrap: str,
    src: str,
    slow: SlowTransaction,
    seen: list[str],
    *,
    more: int = SECOND,
    ready: Callable[[], bool] | None = None,
    before_release: Callable[[], None] = lambda: None,
) -> Callable[[], bool]:
    """The scenario, as a condition the worker runs until: once its first commit is held,
    produce ``more`` records; once ``ready()`` (default: the worker processed all of them
    and the first ones, the commit still held), call ``before_release()`` and release the
    commit."""
    produced = [False]

    def step() -> bool:
        if not slow.fired.is_set():
            return False
        if not produced[0]:
            produce(bootstrap, src, _records(FIRST, more))
            produced[0] = True
            return False
        if not (ready() if ready is not None else len(seen) >= FIRST + more):
            return False
        # Processed while the broker had not confirmed: the loop never waited on it.
        assert not slow.release.is_set()
        before_release()
        slow.release.set()
        return True

    return step


@pytest.mark.parametrize("then", [None, "abortable", "fenced"])
def test_events_go_on_while_a_transaction_commits(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, then: str | None
) -> None:
    """The held commit then succeeds (``None``) or fails (abortable: aborted and rewound;
    fenced: the producer is replaced): either way every count is emitted exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app, seen, slow, worker = _held_worker(kafka_bootstrap, unique_name("bgcommit"), src,
                                           sink, tmp_path, then)  # fmt: skip
    step = _hold_then(kafka_bootstrap, src, slow, seen)
    asyncio.run(
        run_worker_until(
            worker, _then_all_committed(step, kafka_bootstrap, app, src), timeout=HANG_GUARD
        )
    )
    assert slow.count == 1
    if then is None:
        assert len(seen) == FIRST + SECOND  # nothing redone
    else:  # the held transaction's work was done again after the rewind
        assert len(seen) > FIRST + SECOND
    _check_counts(kafka_bootstrap, sink, FIRST + SECOND)

    # A fresh worker on the same state carries on from the counts RocksDB holds.
    produce(kafka_bootstrap, src, _records(FIRST + SECOND, KEYS))
    _carry_on(kafka_bootstrap, app, src, sink, tmp_path)
    _check_counts(kafka_bootstrap, sink, FIRST + SECOND + KEYS)


def test_a_stop_while_a_transaction_commits_waits_for_it(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    """SIGTERM-like stop while the broker has not confirmed: the final commit waits for the
    transaction in flight, then commits what was processed meanwhile; nothing is lost."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    _, seen, slow, worker = _held_worker(kafka_bootstrap, unique_name("bgstop"), src,
                                         sink, tmp_path)  # fmt: skip

    def held_and_processed() -> bool:
        return slow.fired.is_set() and len(seen) >= FIRST

    def release_once_stopping() -> None:
        # The stop is requested with the commit still held; it is confirmed only once the
        # worker is stopping, so the final commit must wait for it.
        def release() -> None:
            wait_until(lambda: worker._stopping, "the worker to start stopping", timeout=60)
            slow.release.set()

        threading.Thread(target=release, daemon=True).start()

    asyncio.run(
        run_worker_until(worker, held_and_processed, then=release_once_stopping, timeout=HANG_GUARD)
    )
    _check_counts(kafka_bootstrap, sink, FIRST)


@pytest.mark.parametrize("then", [None, "fenced"])
def test_a_stop_gives_up_a_commit_the_broker_never_confirms_and_loses_nothing(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, then: str | None
) -> None:
    """A stop while the broker does not confirm a transaction (a broker that went away)
    waits for it until its own timeout and the stop's short grace, then exits with
    CommitFailed saying the commit was not confirmed (before, it waited the 15 s grace of a
    stuck call and said the producer was fenced). Whether the broker then commits that
    transaction (``None``) or not (``fenced``), a fresh worker carries on and every count
    comes out exactly once."""
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app, _, slow, worker = _held_worker(kafka_bootstrap, unique_name("bgunconf"), src,
                                        sink, tmp_path, then)  # fmt: skip

    with pytest.raises(CommitFailed, match="final commit was not confirmed by the broker"):
        asyncio.run(run_worker_until(worker, slow.fired.is_set, timeout=HANG_GUARD))
    # The stop ended with the commit still held (for 60 s, or until released).
    slow.release.set()  # the broker answers at last: commits it, or fails it
    _carry_on(kafka_bootstrap, app, src, sink, tmp_path)
    _check_counts(kafka_bootstrap, sink, FIRST)


def test_reading_waits_once_the_outputs_held_for_a_commit_reach_the_bound(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path, monkeypatch
) -> None:
    """While the broker does not confirm a transaction, the outputs of events completed
    meanwhile are held in memory; past ``HELD_MAX`` events the worker reads nothing new
    until it is confirmed (so memory stays bounded), and then goes on: every count once."""
    monkeypatch.setattr(committer, "HELD_MAX", 100)
    more = 5_000  # far beyond the bound plus what lanes and one fetch can hold
    src, sink = create_topic("src", partitions=2), create_topic("sink", partitions=2)
    app, seen, slow, worker = _held_worker(kafka_bootstrap, unique_name("bgbound"), src,
                                           sink, tmp_path)  # fmt: skip
    observed: list[tuple[int, int]] = []

    def paused_and_drained() -> bool:
        # Reading paused, and the lanes drained what they had: nothing moves until the
        # commit is confirmed.
        return bool(worker.stats.held_back) and not any(s.buffered for s in worker._states.values())

    def observe() -> None:
        assert worker._committer is not None
        observed.append((worker.stats.records, worker._committer.held))

    step = _hold_then(kafka_bootstrap, src, slow, seen, more=more,
                      ready=paused_and_drained, before_release=observe)  # fmt: skip
    asyncio.run(
        run_worker_until(
            worker, _then_all_committed(step, kafka_bootstrap, app, src), timeout=HANG_GUARD
        )
    )
    (dispatched, held) = observed[0]
    settings = worker.settings
    assert dispatched < FIRST + more  # it stopped reading before the end
    assert 100 <= held <= 100 + settings.consume_batch + 2 * settings.lane_buffer
    assert worker._committer is not None
    if worker._committer.failures == 0 and not worker._rejoins:
        # Then it went on, nothing redone. (A broker starved on a crowded machine can lose
        # the worker its partitions or fail a checkpoint: that work is then redone, which
        # is right; the counts below are the check that matters.)
        assert len(seen) == FIRST + more
    _check_counts(kafka_bootstrap, sink, FIRST + more)


def _then_all_committed(
    step: Callable[[], bool], bootstrap: str, app: App, src: str
) -> Callable[[], bool]:
    """A condition: ``step()`` until it returns True, then every record of ``src`` committed
    by ``app``'s group (the check is built then, so the end offsets it waits for include
    what the step produced)."""
    stepped: list[bool] = [False]
    check: list[Callable[[], bool]] = []

    def done() -> bool:
        if not stepped[0]:
            stepped[0] = step()
            return False
        if not check:
            check.append(all_committed(bootstrap, app.group_id, src, 2))
        return check[0]()

    return done
