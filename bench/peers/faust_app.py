"""The scenarios written with faust-streaming (runs in its own virtualenv, see bench.peers.venvs).

Written as faust's documentation shows: ``faust.App(id, broker="kafka://…",
store="rocksdb://")`` (the store its documentation recommends for production; with the
``rocksdict`` extra installed it runs on rocksdict), topics from ``app.topic`` with the JSON
value serializer (faust's JSON codec uses orjson when installed, which the ``orjson`` extra
does), agents from ``@app.agent(topic)`` iterating ``stream.items()``, ``await
topic.send(key=…, value=…)`` for the output (keeping the input's key, as streamer and the raw
loop do), and ``app.Table("counts", default=int)`` with ``table[key] += 1`` for the count
(RocksDB, backed by the ``<app>-counts-changelog`` topic). A ``faust.Worker(app)`` runs it
(``execute_from_commandline``, as documented for starting a worker from Python) and is
stopped with SIGTERM, the documented way, once every record was processed.

faust's own defaults throughout (commit every 2.8 s, a stream buffer of 4,096), except what a
benchmark must set: ``topic_partitions`` (its default is 8; the input and the table's
changelog must have the input's 4), the data directory, ``web_enabled=False`` (the worker's
web server would take port 6066), the log level INFO (see :func:`_run`) and the consumer
options: faust runs on aiokafka, not
librdkafka, so a ``--consumer-config`` option is passed only where faust has a setting for
the same thing (:mod:`bench.peers.options`); the others are reported as not applied.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import faust  # type: ignore[import-not-found,unused-ignore]

from bench.common import Progress, transform
from bench.peers.child import App, main, measured, versions
from bench.peers.options import faust_settings

DISTRIBUTIONS = ("faust-streaming", "aiokafka", "mode-streaming", "rocksdict", "orjson")


def _app(params: dict[str, Any], guarantee: str) -> tuple[Any, list[str]]:
    applied, skipped = faust_settings(dict(params.get("consumer_config") or {}))
    app = faust.App(
        params["app_id"],
        broker=f"kafka://{params['brokers']}",
        store="rocksdb://",
        datadir=params["state_dir"],
        processing_guarantee=guarantee,
        topic_partitions=int(params["partitions"]),
        web_enabled=False,
        **applied,
    )
    return app, skipped


def _run(app: Any, progress: Progress) -> None:
    """Run a worker until it is stopped (it leaves through SystemExit, 0 on a clean stop).

    At log level INFO, as faust's documentation starts workers (``faust -A app worker -l
    info``): at its default WARN level a worker sets the root logger to DEBUG for its terminal
    spinner, and every debug call of aiokafka then builds a log record, which took a large
    share of this benchmark's CPU in a profile."""
    worker = faust.Worker(app, loglevel="INFO")
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            reason = getattr(worker, "crash_reason", None) or getattr(app, "crash_reason", None)
            raise RuntimeError(
                f"the worker stopped (exit status {exc.code}) after {progress.count:,} of "
                f"{progress.target:,} records: {reason!r}"
            ) from exc


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # a worker's warm shutdown: commit, flush, close


def _report(
    app: Any, progress: Progress, guarantee: str, skipped: list[str], **extra: Any
) -> dict[str, Any]:
    return measured(
        progress,
        guarantee=guarantee,
        exactly_once_active=str(app.conf.processing_guarantee.value) == "exactly_once",
        settings={
            "commit_interval": float(app.conf.broker_commit_interval),
            "processing_guarantee": str(app.conf.processing_guarantee.value),
            "stream_buffer_maxsize": int(app.conf.stream_buffer_maxsize),
            "store": str(app.conf.store),
        },
        consumer_config_not_applied=skipped,
        versions=versions(DISTRIBUTIONS),
        **extra,
    )


def stateless_json(params: dict[str, Any]) -> dict[str, Any]:
    """faust-streaming: an agent over ``stream.items()`` that awaits ``output.send(key=key,
    value=transform(value))``, JSON in and out, at-least-once."""
    progress = Progress(int(params["n"]))
    app, skipped = _app(params, "at_least_once")
    source = app.topic(params["src"], value_serializer="json")
    output = app.topic(params["dst"], value_serializer="json")

    @app.agent(source)  # type: ignore[misc,untyped-decorator,unused-ignore]
    async def enrich(stream: Any) -> None:
        async for key, value in stream.items():
            await output.send(key=key, value=transform(value))
            progress.hit()
            if progress.count == progress.target:
                _stop()

    _run(app, progress)
    return _report(app, progress, "at_least_once", skipped)


def _count(params: dict[str, Any], guarantee: str) -> dict[str, Any]:
    progress = Progress(int(params["n"]))
    app, skipped = _app(params, guarantee)
    source = app.topic(params["src"], value_serializer="json")
    counts = app.Table("counts", default=int)

    @app.agent(source)  # type: ignore[misc,untyped-decorator,unused-ignore]
    async def count(stream: Any) -> None:
        async for key, _value in stream.items():
            counts[key] += 1
            progress.hit()
            if progress.count == progress.target:
                _stop()

    _run(app, progress)
    return _report(app, progress, guarantee, skipped)


def count_alo(params: dict[str, Any]) -> dict[str, Any]:
    """faust-streaming: ``counts[key] += 1`` in ``app.Table("counts", default=int)``
    (``store="rocksdb://"`` + changelog) from an agent over ``stream.items()``,
    at-least-once; emits nothing."""
    return _count(params, "at_least_once")


def count_eos(params: dict[str, Any]) -> dict[str, Any]:
    """The same count with ``processing_guarantee="exactly_once"`` (Kafka transactions, one
    transactional producer per input partition)."""
    return _count(params, "exactly_once")


APPS: dict[str, App] = {
    "stateless_json": stateless_json,
    "count_alo": count_alo,
    "count_eos": count_eos,
}

if __name__ == "__main__":
    sys.exit(main(APPS))
