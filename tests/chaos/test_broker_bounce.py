"""Kill -9 the (only) broker mid-run under exactly-once and start it again on the same port
and data: three workers reconnect without restarting and every count comes out exactly
once under read_committed (issue 14). librdkafka may block in send_offsets_to_transaction
far past its timeout after such a bounce (#5456, #5511): the worker then gives that producer
up and starts a fresh one, without restarting.

The broker is this test's own (:class:`streamer.kafka.local.LocalKafka` on a free port with
its own data directory), never the session's shared one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.kafka.local import LocalKafka
from streamer.kafka.ports import free_port_pair, port_is_free
from tests.kafkatools import WorkerProcess, committed, end_offsets, produce, read_all, wait_until

logger = logging.getLogger(__name__)

PARTITIONS = 3
USERS = 40
WORKERS = 3


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for this test alone, on its own port and data directory."""
    broker = LocalKafka(free_port_pair(), home=tmp_path / "kafka", light=True)
    broker.up(progress=logger.info)
    try:
        yield broker
    finally:
        broker.down()


def _produce_users(bootstrap: str, topic: str, start: int, count: int) -> None:
    records = (
        (f"e{i}".encode(), json.dumps({"user": f"u{i % USERS}"}).encode())
        for i in range(start, start + count)
    )
    produce(bootstrap, topic, records)


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    try:
        return sum(max(o, 0) for o in committed(bootstrap, group, topic, PARTITIONS).values())
    except Exception:  # the broker is away or busy: nothing known yet
        return 0


def test_workers_ride_out_a_broker_kill_and_restart(own_broker: LocalKafka, tmp_path: Path) -> None:
    bootstrap = own_broker.bootstrap
    env = {
        "STREAMER_BROKERS": bootstrap,
        "TEST_APP_ID": "bounce",
        "TEST_SRC": "bounce-in",
        "TEST_OUT": "bounce-out",
        "TEST_PARTITIONS": str(PARTITIONS),
    }
    workers = [
        WorkerProcess(
            "tests.apps.regroup",
            {**env, "STREAMER_STATE_DIR": str(tmp_path / f"state-{i}")},
            tmp_path,
            f"worker-{i}",
            instance=f"w{i}",
        )
        for i in range(WORKERS)
    ]
    pids = [w.proc.pid for w in workers]
    try:
        wait_until(
            lambda: all("assigned" in w.log() for w in workers),
            "no assignment",
            workers=workers,
            timeout=120,
        )
        first, second = 4_000, 4_000
        _produce_users(bootstrap, env["TEST_SRC"], 0, first)
        # Mid-run: some of the first batch is committed, not all of it.
        wait_until(
            lambda: _committed_total(bootstrap, "bounce", env["TEST_SRC"]) >= 500,
            "nothing committed before the kill",
            workers=workers,
            timeout=120,
        )
        pid = own_broker.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not own_broker.status().running,
            "broker did not die",
            workers=workers,
            timeout=30,
        )
        # The dead JVM's listening socket goes a moment after the process.
        wait_until(
            lambda: port_is_free(own_broker.port), "port still held", workers=workers, timeout=30
        )
        # Same port, same data. A broker killed -9 registers again only once its old
        # registration expired (broker.session.timeout.ms) and then loads its logs: on a
        # crowded machine that is minutes, not seconds (a hang guard, not a timing check).
        own_broker.up(progress=logger.info, timeout=300)
        _produce_users(bootstrap, env["TEST_SRC"], first, second)
        total = first + second
        ends = end_offsets(bootstrap, env["TEST_SRC"], PARTITIONS)
        assert sum(ends.values()) == total
        # A hang guard, generous: on a busy machine the restarted broker may take minutes to
        # answer every coordinator request (the workers wait and call again meanwhile).
        wait_until(
            lambda: _committed_total(bootstrap, "bounce", env["TEST_SRC"]) == total,
            "not everything committed after the restart",
            workers=workers,
            timeout=300,
        )
        # Every input committed is the first stage done; the counting stage after the
        # repartition topic may still be catching up (in a stress run, a counting worker
        # was still replacing producers three minutes after the broker came back): wait for
        # all its counts (a hang guard).
        counts = read_all(bootstrap, env["TEST_OUT"], expect=total, timeout=600)
        assert len(counts) >= total, f"{len(counts)} of {total} counts after 600 s:\n" + "\n".join(
            w.log()[-1500:] for w in workers
        )
        per_user: dict[str, list[int]] = defaultdict(list)
        for message in counts:
            per_user[message.key().decode()].append(int(message.value()))
        expected = Counter(f"u{i % USERS}" for i in range(total))
        assert {u: sorted(v) for u, v in per_user.items()} == {
            u: list(range(1, n + 1)) for u, n in expected.items()
        }
        # The same processes throughout, and each said it got the broker back.
        assert [w.proc.pid for w in workers] == pids and all(w.alive() for w in workers)
        # Each says it got the broker back: a worker whose partitions came back last may
        # say so a moment after the counts are committed.
        wait_until(
            lambda: all("reconnected to Kafka" in w.log() for w in workers),
            lambda: (
                "a worker never said it reconnected:\n"
                + "\n".join(
                    w.log()[-1500:] for w in workers if "reconnected to Kafka" not in w.log()
                )
            ),
            workers=workers,
            timeout=120,
        )
    finally:
        for worker in workers:
            if worker.alive():
                worker.proc.terminate()
        deadline = time.monotonic() + 30
        for worker in workers:
            try:
                worker.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.error("%s ignored SIGTERM for 30s; killed", worker.log_path.name)
            worker.close()  # kills it if still alive
