"""The scenarios written with Quix Streams (runs in its own virtualenv, see bench.peers.venvs).

Written as Quix Streams' documentation shows: an ``Application`` with a broker address and a
consumer group, topics from ``app.topic`` (JSON values, its default serializers, which use
orjson), a ``StreamingDataFrame`` from ``app.dataframe``, ``sdf.apply(fn)`` for the per-record
transform and ``sdf.to_topic(topic)`` for the output (it keeps the input's key), and
``sdf.update(fn, stateful=True)`` with ``state.get``/``state.set`` for the count (RocksDB,
backed by a changelog topic; state is per message key). Its own defaults throughout (commit
every 5 s, one message per ``poll``), except what a benchmark must set: ``auto_offset_reset=
"earliest"`` (the input is produced before the app starts), the state directory, the log
level, and ``--consumer-config`` options, passed as ``consumer_extra_config`` (librdkafka
options, as for streamer and the raw loop).

Time is counted the way streamer's scenarios count it (:class:`bench.common.Progress`), in
the ``on_message_processed`` callback: called on the processing thread after a message went
through the whole dataframe (and its output was handed to the producer). The app stops
itself with ``app.stop()`` once every record was processed; ``run`` then commits.
"""

from __future__ import annotations

import sys
from typing import Any

import confluent_kafka  # type: ignore[import-not-found,unused-ignore]
from quixstreams import Application, State  # type: ignore[import-not-found,unused-ignore]

from bench.common import Progress, transform
from bench.peers.child import App, main, measured, versions

DISTRIBUTIONS = ("quixstreams", "confluent-kafka", "rocksdict", "orjson")
COMMIT_INTERVAL = 5.0  # seconds: Application's default (not passed; reported only)


def _application(params: dict[str, Any], progress: Progress, guarantee: str) -> Any:
    app: Any = None

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        progress.hit()
        if progress.done:
            app.stop()

    app = Application(
        broker_address=params["brokers"],
        consumer_group=params["app_id"],
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        consumer_extra_config=dict(params.get("consumer_config") or {}),
        state_dir=params["state_dir"],
        loglevel="WARNING",
        on_message_processed=processed,
    )
    return app


def _report(progress: Progress, guarantee: str, **extra: Any) -> dict[str, Any]:
    return measured(
        progress,
        guarantee=guarantee,
        exactly_once_active=guarantee == "exactly-once",
        settings={"commit_interval": COMMIT_INTERVAL, "processing_guarantee": guarantee},
        versions={**versions(DISTRIBUTIONS), "librdkafka": confluent_kafka.libversion()[0]},
        **extra,
    )


def stateless_json(params: dict[str, Any]) -> dict[str, Any]:
    """Quix Streams: ``sdf.apply(transform)`` then ``sdf.to_topic(output)``, JSON in and out
    (its default serializers), at-least-once."""
    progress = Progress(int(params["n"]))
    app = _application(params, progress, "at-least-once")
    source = app.topic(params["src"], value_deserializer="json")
    output = app.topic(params["dst"], value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(transform)
    sdf.to_topic(output)
    app.run()
    return _report(progress, "at-least-once")


def _count(params: dict[str, Any], guarantee: str) -> dict[str, Any]:
    progress = Progress(int(params["n"]))
    app = _application(params, progress, guarantee)
    source = app.topic(params["src"], value_deserializer="json")

    def count(_value: dict[str, Any], state: State) -> None:
        state.set("count", state.get("count", 0) + 1)

    sdf = app.dataframe(source)
    sdf.update(count, stateful=True)
    app.run()
    return _report(progress, guarantee)


def count_alo(params: dict[str, Any]) -> dict[str, Any]:
    """Quix Streams: ``sdf.update(count, stateful=True)`` with ``state.set("count",
    state.get("count", 0) + 1)`` per message key (RocksDB + changelog), at-least-once; emits
    nothing."""
    return _count(params, "at-least-once")


def count_eos(params: dict[str, Any]) -> dict[str, Any]:
    """The same count with ``processing_guarantee="exactly-once"`` (Kafka transactions)."""
    return _count(params, "exactly-once")


APPS: dict[str, App] = {
    "stateless_json": stateless_json,
    "count_alo": count_alo,
    "count_eos": count_eos,
}

if __name__ == "__main__":
    sys.exit(main(APPS))
