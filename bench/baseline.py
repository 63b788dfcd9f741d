"""The yardstick: a raw confluent-kafka loop doing the stateless scenario's work, no framework.

``consume(batch)`` -> ``orjson.loads`` -> :func:`bench.common.transform` -> ``orjson.dumps``
-> ``produce`` (the input's key), with an at-least-once checkpoint every commit interval:
flush the producer, then commit the offsets reached. It uses streamer's own librdkafka
defaults (``CONSUMER_DEFAULTS``/``PRODUCER_DEFAULTS``) and the same ``consume_batch`` and
``commit_interval`` settings, so the clients are configured identically and the difference
to a streamer scenario is the Python work of the framework: the practical ceiling.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.child import Ctx, Job
from bench.common import Progress, transform
from streamer.kafka.clients import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS
from streamer.settings import load_settings


def raw_loop(job: Job, ctx: Ctx) -> dict[str, Any]:
    """Process ``params["n"]`` records of ``params["src"]`` into ``params["dst"]``.

    ``params["poll"]`` is the consume timeout (default 0.1 s, as streamer's idle pump):
    ``consume(batch, timeout)`` returns when the batch is full *or* the timeout passed, so at
    a moderate rate it sets the latency floor of both loops.
    """
    params = job.params
    src, dst, n = params["src"], params["dst"], int(params["n"])
    partitions = int(params["partitions"])
    settings = load_settings(brokers=job.brokers)
    consumer = Consumer(
        {
            "bootstrap.servers": job.brokers,
            "group.id": params["group"],
            **CONSUMER_DEFAULTS,
            **(params.get("consumer_config") or {}),  # the overrides the apps get too
        }
    )
    producer = Producer({"bootstrap.servers": job.brokers, **PRODUCER_DEFAULTS})
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    assigned: set[int] = set()

    def on_assign(_c: Consumer, parts: list[TopicPartition]) -> None:
        assigned.update(tp.partition for tp in parts)

    offsets: dict[tuple[str, int], int] = {}

    def checkpoint() -> None:
        if producer.flush(30) or failures:
            raise RuntimeError(f"outputs not delivered: {failures[:1] or 'flush timed out'}")
        if offsets:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )

    progress = Progress(n)
    produce, loads, dumps = producer.produce, orjson.loads, orjson.dumps
    interval = settings.effective_commit_interval
    poll = float(params.get("poll", 0.1))
    consumer.subscribe([src], on_assign=on_assign)
    next_commit = time.perf_counter() + interval
    try:
        while not progress.done:
            messages = consumer.consume(settings.consume_batch, poll)
            if len(assigned) == partitions:
                ctx.ready()
            for message in messages:
                error = message.error()
                if error is not None:  # partition EOF and transient errors: skip
                    if error.fatal():
                        raise RuntimeError(f"fatal consumer error: {error.str()}")
                    continue
                out = dumps(transform(loads(message.value())))  # type: ignore[arg-type]
                while True:
                    try:
                        produce(dst, out, message.key(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                offsets[(src, message.partition())] = message.offset() + 1  # type: ignore[operator,index]
                progress.hit()
            producer.poll(0)
            if time.perf_counter() >= next_commit:
                checkpoint()
                next_commit = time.perf_counter() + interval
        checkpoint()
    finally:
        consumer.close()
    return {
        "processed": progress.count,
        "seconds": progress.seconds,
        "rate": progress.rate,
        **progress.cpu(),
    }
