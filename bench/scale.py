"""The ``processes`` scenario: one app run by ``streamer worker APP --processes 1`` and then
``--processes 2``, as a user runs it (the CLI, a supervisor, worker children).

The workers start on an empty topic; a warm-up batch is processed and the group must be
stable with every process a member owning partitions before the measured input is
produced (from a thread of this process, faster than the workers process it). The rate
is read from outside: the output topic's end offsets are polled every 50 ms and the rate
is taken between 10% and 90% of the measured outputs. The CPU the broker took over the
same window is read from its process (found by its listening port; only for a broker on
this machine), and the workers' from the command's process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from bench.common import MB, PARTITIONS, Result
from bench.kafka_io import Topics, high_watermarks, json_records, produce, unique

ROOT = Path(__file__).resolve().parent.parent  # the project: children import bench and streamer
POLL = 0.05  # seconds between looks at the output's end offsets

APP = """
import json, os
from streamer import App
from bench.common import transform

env = os.environ
app = App(env["BENCH_APP_ID"], brokers=env["BENCH_BROKERS"], state_dir=env["BENCH_STATE_DIR"],
          consumer_config=json.loads(env["BENCH_CONSUMER_CONFIG"]))
src = app.topic(env["BENCH_SRC"], key_type=str, value_type=dict, partitions=%(partitions)d)
dst = app.topic(env["BENCH_DST"], key_type=str, value_type=dict, partitions=%(partitions)d)


@app.agent(src, sink=[dst])
async def passthrough(stream):
    async for event in stream:
        yield transform(event.value)
"""


class _Outputs:
    """The output topic's record count, read with one consumer for the whole run."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": unique("scale")})

    def count(self) -> int:
        return high_watermarks(self.consumer, self.topic, range(PARTITIONS))

    def close(self) -> None:
        self.consumer.close()


def broker_process(brokers: str) -> psutil.Process | None:
    """The process listening on the broker's port on this machine, if any."""
    port = int(brokers.split(",")[0].rsplit(":", 1)[1])
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and getattr(conn.laddr, "port", None) == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def _cpu(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return None


def run_processes(
    brokers: str, count: int, n: int, state_dir: Path, consumer_config: dict[str, str]
) -> dict[str, Any]:
    """Process ``n`` pre-produced records with ``--processes count``; the measured run."""
    topics = Topics(brokers)
    try:
        src = topics.create(unique(f"scale{count}-in"), PARTITIONS)
        dst = topics.create(unique(f"scale{count}-out"), PARTITIONS)
        app_id = unique(f"scale{count}")
        topics.groups.append(app_id)
        app_file = state_dir / f"{app_id}.py"
        app_file.write_text(APP % {"partitions": PARTITIONS}, encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "BENCH_APP_ID": app_id,
            "BENCH_BROKERS": brokers,
            "BENCH_STATE_DIR": str(state_dir / app_id),
            "BENCH_CONSUMER_CONFIG": json.dumps(consumer_config),
            "BENCH_SRC": src,
            "BENCH_DST": dst,
        }
        return _measure(brokers, count, n, app_file, env, src, _Outputs(brokers, dst))
    finally:
        topics.cleanup()


def _measure(
    brokers: str,
    count: int,
    n: int,
    app_file: Path,
    env: dict[str, str],
    src: str,
    outputs: _Outputs,
) -> dict[str, Any]:
    broker = broker_process(brokers)
    command = [sys.executable, "-m", "streamer", "worker", str(app_file), "--processes", str(count)]
    supervisor = subprocess.Popen(command, env=env, cwd=app_file.parent)
    warmup = max(min(1_000, n // 10), 1)
    samples: list[tuple[float, int]] = []
    workers_cpu: dict[int, float] = {}
    peak_rss = 0
    deadline = time.monotonic() + 120.0 + n / 1_000
    feeder: threading.Thread | None = None
    broker_before: float | None = None

    def sample() -> int:
        nonlocal peak_rss
        done = outputs.count()
        for process in _tree(supervisor.pid):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                workers_cpu[process.pid] = times.user + times.system
                peak_rss = max(peak_rss, process.memory_info().rss)
        if supervisor.poll() is not None:
            raise RuntimeError(f"the workers stopped (status {supervisor.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {n + warmup} outputs in time")
        return done

    try:
        produce(brokers, src, json_records(warmup))
        while sample() < warmup or not _settled(brokers, env["BENCH_APP_ID"], count):
            time.sleep(0.2)
        cpu_before = sum(workers_cpu.values())
        broker_before = _cpu(broker)
        feeder = threading.Thread(target=produce, args=(brokers, src, json_records(n)))
        feeder.start()
        while True:
            done = sample() - warmup
            samples.append((time.monotonic(), done))
            if done >= n:
                break
            time.sleep(POLL)
    finally:
        if feeder is not None:
            feeder.join(120)
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
        status = supervisor.wait(120)
        outputs.close()
    broker_after = _cpu(broker)
    seconds, rate = _window_rate(samples, n)
    return {
        "processes": count,
        "processed": n,
        "seconds": seconds,
        "rate": rate,
        "exit_status": status,
        "peak_rss_mb": round(peak_rss / MB, 1),
        "workers_cpu_s": round(sum(workers_cpu.values()) - cpu_before, 2),
        "broker_cpu_s": None
        if broker_before is None or broker_after is None
        else round(broker_after - broker_before, 2),
    }


def _settled(brokers: str, group: str, members: int) -> bool:
    """``group`` is stable with ``members`` members, each owning a partition."""
    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException:
        return False
    return (
        found.state == ConsumerGroupState.STABLE
        and len(found.members) == members
        and all(m.assignment.topic_partitions for m in found.members)
    )


def _tree(pid: int) -> list[psutil.Process]:
    """The command's process and its children (with one process there is no supervisor:
    the command is the worker)."""
    with contextlib.suppress(psutil.Error):
        top = psutil.Process(pid)
        return [top, *top.children()]
    return []


def _window_rate(samples: list[tuple[float, int]], n: int) -> tuple[float, float]:
    """Seconds and records/s between the first sample at >= 10% and the first at >= 90% of
    ``n`` outputs (from the first output to the last when the run is too short for that)."""
    low = next((s for s in samples if s[1] >= n * 0.1), samples[-1])
    high = next((s for s in samples if s[1] >= n * 0.9), samples[-1])
    if high[0] <= low[0]:
        low = next((s for s in samples if s[1] > 0), samples[0])
        high = samples[-1]
    seconds = max(high[0] - low[0], POLL)
    return round(seconds, 3), round(max(high[1] - low[1], 1) / seconds, 1)


def processes_result(
    name: str, description: str, one: dict[str, Any], two: dict[str, Any]
) -> Result:
    """The scenario's row: the two-process run's rate, the scale factor over one process."""
    result = Result(
        scenario=name,
        description=description,
        messages=int(two["processed"]),
        seconds=float(two["seconds"]),
        rate=float(two["rate"]),
        peak_rss_mb=two["peak_rss_mb"],
        extra={
            "rate_1_process": one["rate"],
            "rate_2_processes": two["rate"],
            "scale_factor": round(two["rate"] / one["rate"], 2) if one["rate"] else None,
            "broker_cpu_s_1_process": one["broker_cpu_s"],
            "broker_cpu_s_2_processes": two["broker_cpu_s"],
            "workers_cpu_s_1_process": one["workers_cpu_s"],
            "workers_cpu_s_2_processes": two["workers_cpu_s"],
            "exit_status": [one["exit_status"], two["exit_status"]],
        },
    )
    if one["exit_status"] or two["exit_status"]:
        result.status = "failed"
        result.reason = f"the workers did not stop cleanly: {result.extra['exit_status']}"
    return result
