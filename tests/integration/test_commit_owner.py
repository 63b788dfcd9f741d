"""The failure paths of the commit owner, on the real broker: a refused output, two agents on
one topic, a failure while draining for shutdown, an agent that will not read its stream, a
drain that outlives ``shutdown_timeout``. Every test reads the outputs back with
read_committed and checks the committed offsets: nothing lost, nothing doubled (under
exactly-once), and the worker's exit says what happened."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from streamer import (
    AgentFailed,
    App,
    ErrorPolicy,
    OutputRefused,
    ShutdownIncomplete,
    Stream,
)
from streamer.worker import Worker
from tests.kafkatools import (
    all_committed,
    committed,
    produce,
    read_all,
    run_worker_until,
    wait_until_async,
)

GUARANTEES = ["at_least_once", "exactly_once"]
FAST_RETRIES = ErrorPolicy(retries=2, backoff=0.01, max_backoff=0.05)


def _app(bootstrap: str, unique_name: Callable[[str], str], guarantee: str, **kw: object) -> App:
    return App(
        unique_name("owner"),
        brokers=bootstrap,
        processing_guarantee=guarantee,
        commit_interval=0.2,
        state_dir=str(kw.pop("state_dir", "state")),
        **kw,
    )


def _upper_one_too_large(
    app: App, bootstrap: str, create_topic: Callable[..., str], *, partitions: int, count: int
) -> str:
    """Run ``app`` with an agent that upper-cases ``count`` values into a sink whose
    ``max.message.bytes`` is 2,000, where record 17 yields 5,000 bytes, until every offset
    is committed. Returns the sink topic's name."""
    src = create_topic("src", partitions=partitions)
    sink = create_topic("sink", partitions=partitions, config={"max.message.bytes": "2000"})
    source = app.topic(src, key_type=str, value_type=str, partitions=partitions)
    out = app.topic(sink, key_type=str, value_type=str, partitions=partitions)

    @app.agent(source, sink=[out])
    async def upper(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            yield event.key, ("x" * 5_000 if event.value == "big" else event.value.upper())

    records = [(f"k{i}".encode(), b"big" if i == 17 else f"v{i}".encode()) for i in range(count)]
    produce(bootstrap, src, records)
    done = all_committed(bootstrap, app.group_id, src, partitions)
    asyncio.run(run_worker_until(Worker(app, handle_signals=False), done))
    return sink


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_refused_output_is_the_agents_failure_retried_then_dead_lettered(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    """The broker refuses one output (larger than the sink's max.message.bytes): the agent's
    policy retries it, then dead-letters the event with the reason; every other output is
    there (exactly once under exactly-once), and no partition livelocks."""
    app = _app(kafka_bootstrap, unique_name, guarantee, on_error=FAST_RETRIES)
    sink = _upper_one_too_large(app, kafka_bootstrap, create_topic, partitions=2, count=60)
    outputs = read_all(kafka_bootstrap, sink, expect=59)
    values = Counter(m.value().decode() for m in outputs)
    expected = {f"V{i}" for i in range(60) if i != 17}
    assert set(values) == expected
    if guarantee == "exactly_once":
        assert all(count == 1 for count in values.values()), values
    letters = read_all(kafka_bootstrap, f"{app.id}-upper-dlq", expect=1)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert letters[0].key() == b"k17" and letters[0].value() == b"big"
    assert headers["streamer.error.type"] == "OutputRefused"
    assert "MSG_SIZE_TOO_LARGE" in headers["streamer.error.message"]
    assert headers["streamer.attempts"] == "3"  # the first try and two retries


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_records_that_only_shared_a_refused_batch_are_not_blamed(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    """The broker refuses a partition's whole produce request for one record too large.
    With no retries at all, the record at fault is dead-lettered and every record whose
    output only travelled in the same request reaches the sink (once, under exactly-once).
    A long ``linger.ms`` makes all outputs share one request on the first try."""
    policy = ErrorPolicy(retries=0, on_exhausted="dead_letter")
    app = _app(
        kafka_bootstrap, unique_name, guarantee, on_error=policy,
        producer_config={"linger.ms": 500},
    )  # fmt: skip
    sink = _upper_one_too_large(app, kafka_bootstrap, create_topic, partitions=1, count=40)
    values = Counter(m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=39))
    assert set(values) == {f"V{i}" for i in range(40) if i != 17}
    if guarantee == "exactly_once":
        assert all(count == 1 for count in values.values()), values
    letters = read_all(kafka_bootstrap, f"{app.id}-upper-dlq", idle=2)
    assert [(m.key(), m.value()) for m in letters] == [(b"k17", b"big")]
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert "MSG_SIZE_TOO_LARGE" in headers["streamer.error.message"]
    assert headers["streamer.attempts"] == "1"  # refused when sent alone, once


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_refused_output_under_stop_leaves_its_event_uncommitted(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    src = create_topic("src", partitions=1)
    sink = create_topic("sink", partitions=1, config={"max.message.bytes": "2000"})
    policy = ErrorPolicy(retries=0, on_exhausted="stop")
    app = _app(kafka_bootstrap, unique_name, guarantee, on_error=policy)
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    out = app.topic(sink, key_type=str, value_type=str, partitions=1)

    @app.agent(source, sink=[out])
    async def copy(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            yield event.key, ("x" * 5_000 if event.value == "big" else event.value)

    produce(kafka_bootstrap, src, [(b"k", f"v{i}".encode()) for i in range(5)])
    produce(kafka_bootstrap, src, [(b"k", b"big"), (b"k", b"after")])
    with pytest.raises(OutputRefused, match="MSG_SIZE_TOO_LARGE"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False), lambda: False))
    # Offsets never pass the refused record (offset 5); what came before may be committed.
    assert committed(kafka_bootstrap, app.group_id, src, 1)[0] <= 5
    values = [m.value().decode() for m in read_all(kafka_bootstrap, sink, idle=2)]
    assert "after" not in values
    if guarantee == "exactly_once":
        assert len(values) == len(set(values))


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_two_agents_on_one_topic_keep_their_own_attempts(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    """Agent A fails once on e2 and is retried; agent B succeeds on everything. Undoing A's
    attempt must not touch B's outputs, nor B's A's."""
    src = create_topic("src", partitions=1)
    sink_a = create_topic("a", partitions=1)
    sink_b = create_topic("b", partitions=1)
    app = _app(kafka_bootstrap, unique_name, guarantee, on_error=FAST_RETRIES)
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    out_a = app.topic(sink_a, key_type=str, value_type=str, partitions=1)
    out_b = app.topic(sink_b, key_type=str, value_type=str, partitions=1)
    failed: set[str] = set()
    b_done: set[str] = set()
    b_first: list[bool] = []  # whether B had completed e2 when A failed on it

    @app.agent(source, sink=[out_a], name="a")
    async def agent_a(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            if event.value == "e2" and "e2" not in failed:
                failed.add("e2")
                # A fails only once B completed e2: B's output is in flight when A's undone.
                await wait_until_async(lambda: "e2" in b_done, "B never completed e2")
                b_first.append("e2" in b_done)
                raise RuntimeError("transient")
            yield event.key, f"a:{event.value}"

    @app.agent(source, sink=[out_b], name="b")
    async def agent_b(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            yield event.key, f"b:{event.value}"
            b_done.add(event.value)  # resumed: the worker took the output

    produce(kafka_bootstrap, src, [(b"k", f"e{i}".encode()) for i in range(1, 4)])
    asyncio.run(run_worker_until(Worker(app, handle_signals=False),
                           all_committed(kafka_bootstrap, app.group_id, src, 1)))  # fmt: skip

    assert failed == {"e2"}
    assert b_first == [True], "B had not completed e2 when A failed"
    a = [m.value().decode() for m in read_all(kafka_bootstrap, sink_a, expect=3)]
    b = [m.value().decode() for m in read_all(kafka_bootstrap, sink_b, expect=3)]
    if guarantee == "exactly_once":
        assert a == ["a:e1", "a:e2", "a:e3"] and b == ["b:e1", "b:e2", "b:e3"]
    else:
        assert set(a) == {"a:e1", "a:e2", "a:e3"} and set(b) == {"b:e1", "b:e2", "b:e3"}


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_failure_while_draining_keeps_the_policy(
    kafka_bootstrap: str, create_topic, unique_name, guarantee: str
) -> None:
    """An event that fails after SIGTERM (while the worker drains) is retried, as it would
    be at any other time, and its output committed; it is neither skipped nor dead-lettered
    without its retries."""
    src = create_topic("src", partitions=1)
    sink = create_topic("sink", partitions=1)
    app = _app(kafka_bootstrap, unique_name, guarantee, on_error=FAST_RETRIES,
               shutdown_timeout=60)  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    out = app.topic(sink, key_type=str, value_type=str, partitions=1)
    holding = asyncio.Event()
    tries: list[str] = []
    worker_box: list[Worker] = []

    @app.agent(source, sink=[out])
    async def slow(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            if event.value == "hold":
                tries.append(event.value)
                holding.set()
                await wait_until_async(lambda: worker_box[0]._stopping, "the drain never began")
                if len(tries) == 1:
                    raise RuntimeError("fails once, during the drain")
            yield event.key, event.value

    produce(kafka_bootstrap, src, [(b"k", b"first"), (b"k", b"hold")])
    worker = Worker(app, handle_signals=False)
    worker_box.append(worker)
    asyncio.run(run_worker_until(worker, holding.is_set))

    assert len(tries) == 2  # failed once while draining, then retried
    values = [m.value().decode() for m in read_all(kafka_bootstrap, sink, expect=2)]
    assert sorted(set(values)) == ["first", "hold"]
    if guarantee == "exactly_once":
        assert sorted(values) == ["first", "hold"]
    assert committed(kafka_bootstrap, app.group_id, src, 1)[0] == 2
    assert not read_all(kafka_bootstrap, f"{app.id}-slow-dlq", idle=1, timeout=5)


def test_a_drain_past_shutdown_timeout_leaves_the_event_uncommitted_and_says_so(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("src", partitions=1)
    sink = create_topic("sink", partitions=1)
    app = _app(kafka_bootstrap, unique_name, "exactly_once", shutdown_timeout=0.5)
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    out = app.topic(sink, key_type=str, value_type=str, partitions=1)
    stuck = asyncio.Event()

    @app.agent(source, sink=[out])
    async def blocked(stream: Stream):  # type: ignore[no-untyped-def]
        async for event in stream:
            if event.value == "stuck":
                stuck.set()
                await asyncio.Event().wait()  # never set: only cancellation ends it
            yield event.key, event.value

    produce(kafka_bootstrap, src, [(b"k", b"ok"), (b"k", b"stuck"), (b"k", b"later")])
    with pytest.raises(ShutdownIncomplete, match=r"shutdown_timeout=0\.5s"):
        asyncio.run(run_worker_until(Worker(app, handle_signals=False), stuck.is_set))
    assert committed(kafka_bootstrap, app.group_id, src, 1)[0] <= 1
    assert [m.value() for m in read_all(kafka_bootstrap, sink, idle=2)] in ([], [b"ok"])


def test_an_agent_that_never_reads_its_stream_stops_the_worker_with_one_line(
    kafka_bootstrap: str, create_topic, unique_name
) -> None:
    src = create_topic("src", partitions=1)
    app = _app(kafka_bootstrap, unique_name, "at_least_once",
               on_error=ErrorPolicy(backoff=0.01, max_backoff=0.02))  # fmt: skip
    source = app.topic(src, key_type=str, value_type=str, partitions=1)
    calls: list[int] = []

    @app.agent(source)
    async def lazy(stream: Stream) -> None:
        calls.append(1)  # returns without reading: a mistake

    produce(kafka_bootstrap, src, [(b"k", b"v")])
    with pytest.raises(AgentFailed, match="agent 'lazy' returned 5 times in a row") as info:
        asyncio.run(run_worker_until(Worker(app, handle_signals=False), lambda: False))
    assert "\n" not in str(info.value)
    assert len(calls) == 6  # the first run and five restarts, with backoff between them
    assert committed(kafka_bootstrap, app.group_id, src, 1)[0] < 1
