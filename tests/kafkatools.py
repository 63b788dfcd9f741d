"""Helpers for tests against the real broker: produce, read back, committed offsets, and
worker processes that can be killed. Nothing here fakes Kafka."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from streamer import App
from streamer.kafka.backend import Backend
from streamer.kafka.clients import is_transient
from streamer.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    config: dict[str, str] | None = None,
) -> int:
    """Produce ``records`` (key, value) with murmur2 partitioning, as streamer does;
    ``config`` adds client settings (credentials on a secured broker)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
            # Retries keep each partition's order (a plain producer may reorder batches it
            # retries, e.g. after NOT_LEADER right after a topic was created).
            "enable.idempotence": True,
            **(config or {}),
        }
    )
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    assert producer.flush(180) == 0  # a hang guard: a crowded broker may take minutes
    return count


def read_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
    isolation: str = "read_committed",
    config: dict[str, str] | None = None,
) -> list[Any]:
    """Read ``topic`` from the start: until ``expect`` records arrived, or, without
    ``expect``, until every partition was read to its end and nothing more came for ``idle``
    seconds; bounded by ``timeout``. Returns the messages ([] for a topic that does not
    exist).

    The partitions are assigned, not subscribed: there is no group join to wait for. "Read
    to its end" is the client's partition-EOF event (at the last stable offset under
    read_committed), so on a busy machine the idle clock starts only once everything there
    was has been read, not while the first fetch is still on its way."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            **(config or {}),
        }
    )
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        # A topic that does not exist (yet) is given ``idle`` seconds to appear, or, when
        # records are expected, the whole timeout.
        missing_until = deadline if expect is not None else time.monotonic() + idle
        partitions = _partitions_of(consumer, topic, deadline, min(deadline, missing_until))
        if not partitions:
            return messages
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        last = time.monotonic()
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error, partition = message.error(), message.partition()
                if error is None:
                    messages.append(message)
                    at_end.discard(partition)
                    last = time.monotonic()
                elif error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    at_end.add(partition)
                    if len(at_end) == len(partitions):
                        last = max(last, time.monotonic())
            if expect is not None and len(messages) >= expect:
                # Linger briefly so duplicates or extras would be seen too.
                messages.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
                break
            if expect is None and len(at_end) == len(partitions) and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return messages


def _partitions_of(
    consumer: Consumer, topic: str, deadline: float, missing_until: float
) -> list[int]:
    """``topic``'s partitions once its metadata shows them all with a leader. A request the
    broker lets time out is asked again until ``deadline``; a topic the broker says does not
    exist gives [] after ``missing_until``, and so does a broker too busy to answer by
    ``deadline`` (nothing could be read: the caller's count says so, and a caller that
    polls with short reads simply asks again)."""
    found: list[list[int]] = []

    def known() -> bool:
        try:
            metadata = consumer.list_topics(
                topic, timeout=max(0.5, min(5.0, deadline - time.monotonic()))
            ).topics.get(topic)
        except KafkaException:
            return False  # the broker is busy: list_topics itself waited
        if (
            metadata is not None
            and metadata.error is None
            and metadata.partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            found.append(sorted(metadata.partitions))
            return True
        return time.monotonic() > missing_until  # it does not exist (yet): give up then

    while not known() and time.monotonic() < deadline:
        time.sleep(POLL)
    return found[0] if found else []


_TRANSIENT = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE,  # the request waited in librdkafka's queue past its timeout
    KafkaError._ALL_BROKERS_DOWN,  # a fresh client of a broker that just (re)started
    KafkaError._TRANSPORT,
)


# A just-created topic's partitions while their leaders are elected.
_ELECTING = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
)


def retry_transient(call: Callable[[], T], timeout: float = 120.0) -> T:
    """``call()``, called again while it raises a transient broker error: the group
    coordinator moving or loading (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, as a busy
    or fresh broker answers), a request timed out (also in librdkafka's queue), or any
    retriable error; as a client would. Anything else is raised at once; a transient error
    still there after ``timeout`` seconds (a hang guard: a coordinator that answers
    NOT_COORDINATOR at once may do so for many seconds on a crowded machine, so a count of
    attempts is no bound) is raised then."""
    results: list[T] = []
    deadline = time.monotonic() + timeout

    def answered() -> bool:
        try:
            results.append(call())
            return True
        except KafkaException as exc:
            err = exc.args[0]
            # streamer's own notion, and a few more a test's raw client meets (a restarted
            # broker's partitions unknown to a fresh client: _UNKNOWN_PARTITION).
            transient = is_transient(exc) or err.code() in _TRANSIENT or err.code() in _ELECTING
            if not transient or time.monotonic() >= deadline:
                raise
            return False

    wait_until(answered, "a transient broker error to pass", timeout=timeout + 60)
    return results[0]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none); transient coordinator
    errors are retried (:func:`retry_transient`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        result = retry_transient(
            lambda: consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=10
            )
        )
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


def group_members(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]] | None:
    """The members of a STABLE ``group`` (by instance id, else member id) and the partitions
    each owns; None while the group is rebalancing, empty or unknown to the broker."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException:
        return None  # the coordinator is loading or moving: not known yet
    if description.state != ConsumerGroupState.STABLE:
        return None
    return {
        member.group_instance_id or member.member_id: {
            (tp.topic, tp.partition) for tp in member.assignment.topic_partitions
        }
        for member in description.members
    }


def group_settled(
    bootstrap: str, group: str, members: int, *, without: str | None = None
) -> Callable[[], bool]:
    """A paced check: ``group`` is stable with exactly ``members`` members, each owning at
    least one partition, and none of them is the instance ``without``."""

    def check() -> bool:
        current = group_members(bootstrap, group)
        return (
            current is not None
            and len(current) == members
            and all(current.values())
            and without not in current
        )

    return paced(check, every=0.5)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's high watermark. Retries while a just-created topic's leaders are
    being elected (NOT_LEADER_FOR_PARTITION, UNKNOWN_TOPIC_OR_PART) and while a busy or
    restarted broker lets the request time out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return retry_transient(
            lambda: {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)
            }
        )
    finally:
        consumer.close()


# Seconds a worker run in a test may take to reach its condition: a hang guard, not a timing
# check (stress runs showed a crushed broker making replaced producers and late commits
# outlast 120 s).
RUN_GUARD = 300.0


async def run_until(
    app: App,
    done: Callable[[], bool],
    *,
    timeout: float = RUN_GUARD,
    backend: Backend | None = None,
) -> Worker:
    """Run a worker for ``app`` (with ``backend``, if given) in this loop until ``done()``;
    then stop it cleanly."""
    worker = Worker(app, handle_signals=False, backend=backend)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if task.done():
                task.result()
                raise AssertionError("worker stopped before the condition held")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 120)
    return worker


async def run_worker_until(
    worker: Worker,
    done: Callable[[], bool],
    *,
    then: Callable[[], None] | None = None,
    timeout: float = RUN_GUARD,
) -> None:
    """Run ``worker`` in this loop until ``done()`` (or until it ends by itself), call
    ``then()``, stop it, and re-raise whatever its ``run()`` raised."""
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not done() and not task.done():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
        if then is not None:
            then()
    finally:
        worker.stop()
        await asyncio.wait_for(asyncio.shield(task), 120)
    task.result()


def paced(check: Callable[[], bool], every: float = 0.3) -> Callable[[], bool]:
    """``check``, asked at most every ``every`` seconds (False in between): for checks that
    open a client each time, inside a loop that polls faster."""
    last = [0.0]

    def paced_check() -> bool:
        if time.monotonic() - last[0] < every:
            return False
        last[0] = time.monotonic()
        return check()

    return paced_check


def all_committed(bootstrap: str, group: str, topic: str, partitions: int) -> Callable[[], bool]:
    """A paced check: ``group`` has committed ``topic`` up to its current end."""
    ends = end_offsets(bootstrap, topic, partitions)
    return paced(lambda: committed(bootstrap, group, topic, partitions) == ends)


class WorkerProcess:
    """`streamer worker` in a child process, with its output in a log file."""

    def __init__(
        self,
        app_path: str,
        env: dict[str, str],
        log_dir: Path,
        name: str,
        *,
        instance: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        extra = ["--instance", instance] if instance else []
        extra += args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker", app_path, *extra],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit; returns its code. ``timeout`` guards against a
        hang (the test fails); it is not a claim about how fast a worker stops."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM; the worker must exit cleanly (code 0) — see :meth:`terminate`."""
        code = self.terminate(timeout)
        assert code == 0, f"{self.log_path.name} exited {code}\n{self.log()[-3000:]}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def echo_app(
    bootstrap: str, app_id: str, guarantee: str, src: str, sink: str, **settings: Any
) -> App:
    """An app whose one agent echoes ``src`` (2 partitions, str keys and values) to ``sink``,
    taking ~2 ms per event so that work is in flight whenever a fault fires; committing
    every 0.1 s, stopping within 2 s. ``settings`` override the App's."""
    app = App(app_id, brokers=bootstrap, processing_guarantee=guarantee,
              **{"commit_interval": 0.1, "shutdown_timeout": 2, **settings})  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=2)
    out = app.topic(sink, key_type=str, value_type=str, partitions=2)

    @app.agent(source, sink=[out])
    async def echo(stream: Any) -> Any:
        async for event in stream:
            await asyncio.sleep(0.002)  # simulated work (pacing), not a wait
            yield event.key, event.value

    return app


def count_app(
    bootstrap: str, app_id: str, guarantee: str, src: str, sink: str, **settings: Any
) -> App:
    """An app whose one agent counts ``src``'s keys (2 partitions, str keys) in a table
    and yields each new count to ``sink``; committing every 0.1 s, stopping within 2 s.
    ``settings`` override the App's."""
    app = App(app_id, brokers=bootstrap, processing_guarantee=guarantee,
              **{"commit_interval": 0.1, "shutdown_timeout": 2, **settings})  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=2)
    out = app.topic(sink, key_type=str, value_type=int, partitions=2)
    counts = app.table("counts", default=int, value_type=int)

    @app.agent(source, sink=[out])
    async def count(stream: Any) -> Any:
        async for event in stream:
            counts[event.key] += 1
            yield event.key, counts[event.key]

    return app


def assert_counts_exact(bootstrap: str, sink: str, keys: Iterable[str]) -> None:
    """``sink`` holds, read with read_committed, the counts 1..n of every key, each once,
    where n is how often the key occurs in ``keys`` (the inputs' keys)."""
    expected = Counter(keys)
    per_key: dict[str, list[int]] = defaultdict(list)
    for message in read_all(bootstrap, sink, expect=sum(expected.values())):
        per_key[message.key().decode()].append(int(message.value()))
    assert {k: sorted(v) for k, v in per_key.items()} == {
        k: list(range(1, n + 1)) for k, n in expected.items()
    }


def create_app_topics(app: App) -> None:
    """Create every topic ``app`` declares, as its worker would at start."""
    from confluent_kafka.admin import AdminClient

    from streamer.kafka.admin import ensure_topics

    ensure_topics(
        AdminClient({"bootstrap.servers": app.settings.brokers}),
        [topic.spec for topic in app.topics.values()],
        auto_create=True,
        default_replication=1,
    )


def observe_yields(app: App, agent_name: str, seen: list[Any]) -> None:
    """Wrap a yielding agent so every item it yields is also appended to ``seen``."""
    agent = next(a for a in app.agents if a.name == agent_name)
    original = agent.fn

    async def observed(stream: Any) -> Any:
        async for item in original(stream):
            seen.append(item)
            yield item

    object.__setattr__(agent, "fn", observed)  # Agent is frozen: tests only


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m streamer ARGS` from the repository root (or ``cwd``), ``env`` added to the
    environment, ``stdin`` as its standard input (else none)."""
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        check=False,
        env={**os.environ, **(env or {})},
        input=stdin if stdin is not None else "",
    )


POLL = 0.1  # seconds between two looks at a condition (not a wait for anything)


def _say(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


# What a worker logs when at-least-once work is processed again: partitions lost (a session
# timed out on a busy machine), a failed checkpoint rewound, an offset commit refused.
REDO_SIGNS = ("without a clean hand-over", "rewound ", "checkpoint failed", "commit of ")


def redone(log_text: str) -> bool:
    """Whether a worker's log shows work processed again (at-least-once may then repeat
    outputs and table updates; exactly-once never shows them)."""
    return any(sign in log_text for sign in REDO_SIGNS)


def wait_until(
    check: Callable[[], object],
    what: str | Callable[[], str],
    *,
    timeout: float = 120.0,
    workers: Iterable[WorkerProcess] = (),
    log_of: WorkerProcess | None = None,
) -> None:
    """Wait until ``check()`` is true, looking every ``POLL`` seconds; fail saying ``what``
    (a string, or a function giving one when it fails: the last state seen) after
    ``timeout`` seconds, with the log tail of ``log_of``, else of the first of ``workers``;
    fail at once when one of ``workers`` exited. ``timeout`` guards against a hang; it is
    not a claim about how fast the condition comes."""
    workers = list(workers)
    shown = log_of if log_of is not None else (workers[0] if workers else None)
    deadline = time.monotonic() + timeout
    while not check():
        for worker in workers:
            assert worker.alive(), f"{worker.log_path.name} exited\n{worker.log()[-3000:]}"
        if time.monotonic() >= deadline:
            detail = shown.log()[-3000:] if shown is not None else ""
            raise AssertionError(f"{_say(what)}\n{detail}")
        time.sleep(POLL)


async def wait_until_async(
    check: Callable[[], object | Awaitable[object]],
    what: str | Callable[[], str],
    *,
    timeout: float = 120.0,
    task: asyncio.Task[Any] | None = None,
) -> None:
    """:func:`wait_until` inside an event loop that also runs the worker under test (whose
    ``run()`` is ``task``): looks at ``check()`` (awaited when it returns an awaitable, for
    checks that ask the worker's own web server from a thread) every ``POLL`` seconds
    without blocking the loop; fails saying ``what`` after ``timeout`` seconds, or at once
    when ``task`` ended (with what it raised)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if task is not None and task.done():
            task.result()  # re-raises what the worker raised
            raise AssertionError(f"the worker stopped first; {_say(what)}")
        if time.monotonic() >= deadline:
            raise AssertionError(_say(what))
        await asyncio.sleep(POLL)


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    *,
    worker: WorkerProcess | None = None,
    timeout: float = RUN_GUARD,
) -> None:
    """Wait until ``group`` has committed every partition of ``topic`` up to its end
    (``timeout``: a hang guard; a stress run saw a worker's partitions lost and assigned
    again a minute later while its broker was starved, and 120 s ran out)."""
    ends = end_offsets(bootstrap, topic, partitions)
    wait_until(
        lambda: committed(bootstrap, group, topic, partitions) == ends,
        f"{topic} not fully committed",
        timeout=timeout,
        log_of=worker,
    )


def interruptible() -> None:
    """``preexec_fn`` for a child the test presses Ctrl-C in: SIGINT at its default, as in
    a user's terminal. A test session started in the background (``make stress &``) runs
    with SIGINT ignored, which every child inherits, and then Python raises no
    KeyboardInterrupt at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_terminal(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    interrupt_after: tuple[str, int] | None = None,
) -> tuple[int, str]:
    """`python -m streamer ARGS` with stdout and stderr on a pseudo-terminal (as in a user's
    terminal, 120 columns); returns the exit code and everything it wrote there.
    ``interrupt_after=(text, n)`` presses Ctrl-C (SIGINT) once ``text`` was written n times."""
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", **(env or {})},
        preexec_fn=interruptible,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
                if interrupt_after is not None:
                    text, times = interrupt_after
                    if b"".join(chunks).decode(errors="replace").count(text) >= times:
                        process.send_signal(signal.SIGINT)
                        interrupt_after = None
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def distinct_outputs(
    bootstrap: str, topic: str, expected: set[str], timeout: float = 120
) -> set[str]:
    """Distinct output values of ``topic`` (read_committed), read until they cover
    ``expected`` (duplicates after a crash are allowed: at-least-once); fails after
    ``timeout`` saying how many are missing."""
    seen: set[str] = set()

    def covered() -> bool:
        # Read everything there is (not "until N records": duplicates would end that early).
        seen.clear()
        seen.update(m.value().decode() for m in read_all(bootstrap, topic, idle=2))
        return expected <= seen

    wait_until(
        covered, lambda: f"{len(expected - seen)} inputs never reached {topic}", timeout=timeout
    )
    return seen
