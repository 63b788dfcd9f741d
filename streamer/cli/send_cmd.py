"""`streamer send`: put one record, or many JSON lines, on a topic.

Fast on purpose: one producer, no metadata probe before producing (the first delivery report
tells whether the broker is there), every record produced before any is waited for, so
librdkafka batches them; a single record skips the idempotent producer's set-up round trips.
Each acknowledged record prints ``topic[partition]@offset`` on stdout
(in acknowledgement order, which is offset order within a partition); the count goes to
stderr at the end, so stdout stays a clean list of positions for scripts.

Record encoding: a topic the app (``--app``) declares uses its serdes. Any other topic takes
the key as text, and the value as given: a JSON string as its UTF-8 text, anything else as
compact JSON (with ``--value``, text that is not JSON is sent as text).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import click
import orjson
from confluent_kafka import KafkaError, Message

from streamer.cli.client_config import cli_kafka_config, client_options, load_cli_app
from streamer.errors import (
    ConfigError,
    KafkaOperationError,
    KafkaUnavailableError,
    StreamerError,
)
from streamer.events import Headers
from streamer.kafka.access import ACCESS_FAILURES, refused_connection
from streamer.kafka.backend import Backend, ConfluentBackend, Producer
from streamer.kafka.clients import make_producer
from streamer.settings import Settings, load_settings
from streamer.topics import Topic

# Connection failures are reported once, in the error line, not as log lines before it.
_client_log = logging.getLogger("streamer.cli.send-client")
_client_log.setLevel(logging.CRITICAL)

# librdkafka errors that mean "no broker there", as opposed to a refused record.
_UNREACHABLE = {KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded record, and where it came from (for error messages)."""

    key: bytes | None
    value: bytes | None
    headers: Headers | None
    partition: int
    source: str


@click.command()
@click.argument("topic")
@click.option("--key", default=None, help="Record key (text; with --app, the topic's key serde).")
@click.option(
    "--value", default=None, help="One record's value as JSON (or text); else records come "
    "as JSON lines from --file or stdin.",
)  # fmt: skip
@click.option(
    "--header", "headers", multiple=True, metavar="NAME=VALUE", help="A header (repeatable)."
)
@click.option("--partition", type=click.IntRange(min=0), default=None, help="This partition.")
@click.option(
    "--file", "source", type=click.File("r"), default=None,
    help='JSON lines, one record each: {"key": ..., "value": ..., "headers": {...}, '
    '"partition": N}; "-" is stdin.',
)  # fmt: skip
@click.option("--app", "app_path", default=None, help="Use this app's brokers and topic serdes.")
@click.option("--brokers", default=None, help="Bootstrap servers (default: app's or env).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the count, not each position.")
@client_options
def send(
    topic: str,
    key: str | None,
    value: str | None,
    headers: tuple[str, ...],
    partition: int | None,
    source: IO[str] | None,
    app_path: str | None,
    brokers: str | None,
    quiet: bool,
) -> None:
    """Send records to TOPIC and print where each landed (topic[partition]@offset).

    \b
    streamer send orders --key c1 --value '{"amount": 12.5}'
    streamer send orders --file orders.jsonl
    printf '{"key": "c1", "value": {"amount": 3}}\\n' | streamer send orders
    """
    declared: Topic | None = None
    backend: Backend = ConfluentBackend()
    if app_path:
        if brokers:
            raise ConfigError("--brokers and --app both given; the app names its brokers")
        app = load_cli_app(app_path)
        settings, backend = app.settings, app.backend
        declared = app.topics.get(topic)
    else:
        settings = load_settings(**({"brokers": brokers} if brokers else {}))
        merged = {**settings.kafka_config, **cli_kafka_config()}
        settings = settings.model_copy(update={"kafka_config": merged})
    encode = _Encoder(topic, declared)
    if value is not None:
        if source is not None:
            raise ConfigError("--value and --file both given; use one")
        records: Iterator[Outgoing] = iter(
            [encode.one(key, value, _headers(headers), partition, "--value")]
        )
    else:
        if key is not None or headers:
            raise ConfigError("--key and --header go with --value; JSON lines carry their own")
        stream = source if source is not None else sys.stdin
        if stream.isatty():
            raise ConfigError(
                "nothing to send: give --value, --file FILE, or JSON lines on stdin "
                '(one {"key": ..., "value": ...} per line)'
            )
        records = encode.lines(stream, partition)
    sent = _produce(backend, settings, topic, records, quiet=quiet, single=value is not None)
    click.echo(f"sent {sent} record{'' if sent == 1 else 's'} to {topic}", err=True)


def _headers(pairs: tuple[str, ...]) -> Headers | None:
    out: Headers = []
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--header {pair!r}: write it as NAME=VALUE")
        out.append((name, text.encode()))
    return out or None


class _Encoder:
    """Turns CLI text or JSON-line fields into bytes for ``topic``."""

    def __init__(self, topic: str, declared: Topic | None) -> None:
        self.topic = topic
        self.declared = declared

    def one(
        self, key: str | None, value: str, headers: Headers | None, partition: int | None, at: str
    ) -> Outgoing:
        if self.declared is not None and self.declared.value_serde.name in ("str", "bytes"):
            parsed: Any = value
        else:
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                if self.declared is not None:
                    raise ConfigError(f"--value is not valid JSON: {exc}") from None
                parsed = value  # an undeclared topic takes text as text
        return self._encode(key, parsed, headers, partition, at)

    def lines(self, stream: IO[str], partition: int | None) -> Iterator[Outgoing]:
        name = getattr(stream, "name", "stdin")
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            at = f"{name}:{number}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{at}: not JSON ({exc}); one JSON object per line") from None
            if not isinstance(record, dict):
                raise ConfigError(f'{at}: not a JSON object; write {{"key": ..., "value": ...}}')
            unknown = set(record) - {"key", "value", "headers", "partition"}
            if unknown:
                raise ConfigError(
                    f"{at}: unknown field(s) {', '.join(sorted(unknown))}; "
                    "a line has key, value, headers and partition"
                )
            where = record.get("partition", partition)
            if where is not None and (not isinstance(where, int) or where < 0):
                raise ConfigError(f"{at}: partition must be a number >= 0")
            yield self._encode(
                record.get("key"), record.get("value"), _json_headers(record, at), where, at
            )

    def _encode(
        self, key: Any, value: Any, headers: Headers | None, partition: int | None, at: str
    ) -> Outgoing:
        where = -1 if partition is None else partition
        if self.declared is not None:
            return Outgoing(
                self.declared.encode_key(key), self.declared.encode_value(value), headers,
                where, at,
            )  # fmt: skip
        return Outgoing(_loose(key), _loose(value), headers, where, at)


def _loose(data: Any) -> bytes | None:
    """Undeclared topics: text as text, other JSON values as compact JSON."""
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode()
    return orjson.dumps(data)


def _json_headers(record: dict[str, Any], at: str) -> Headers | None:
    raw = record.get("headers")
    if raw is None:
        return None
    pairs = raw.items() if isinstance(raw, dict) else raw
    try:
        return [(str(name), None if text is None else str(text).encode()) for name, text in pairs]
    except (TypeError, ValueError):
        raise ConfigError(
            f'{at}: headers must be an object {{"name": "value"}} or a list of [name, value]'
        ) from None


def _until_error(records: Iterator[Outgoing]) -> Iterator[Outgoing | StreamerError]:
    """The records, then the error that ended the input early (a bad line), if any."""
    try:
        yield from records
    except StreamerError as exc:
        yield exc


def _produce(
    backend: Backend,
    settings: Settings,
    topic: str,
    records: Iterator[Outgoing],
    *,
    quiet: bool,
    single: bool,
) -> int:
    """Produce every record; print each acknowledged position; return how many were acked.

    Fails at once with KafkaAccessError when the broker refuses the credentials or the TLS
    handshake; with KafkaUnavailableError when nothing is acknowledged within ``connect_timeout``
    and the client reports no broker, and with KafkaOperationError naming the first refused
    record otherwise."""
    timeout = settings.connect_timeout
    broker_errors: list[str] = []
    failures: list[tuple[str, KafkaError]] = []
    acked = 0

    refused: list[str] = []  # credentials or TLS refused: no retry can help, stop at once

    def on_error(err: KafkaError) -> None:
        broker_errors.append(err.str())
        if err.code() in ACCESS_FAILURES:
            refused.append(err.str())

    def delivered(err: KafkaError | None, message: Message, *, at: str) -> None:
        nonlocal acked
        if err is not None:
            failures.append((at, err))
            return
        acked += 1
        if not quiet:
            click.echo(f"{message.topic()}[{message.partition()}]@{message.offset()}")

    producer: Producer = make_producer(
        backend,
        settings.brokers,
        {
            # The idempotent producer's set-up costs half a second; one record cannot be
            # reordered by retries, so a single send goes without it (user options still win).
            **({"enable.idempotence": False} if single else {}),
            **settings.kafka_config,
            **settings.producer_config,
            "delivery.report.only.error": False,  # the positions are the output
            # An unknown topic fails after this, not after librdkafka's 30 s default; and a
            # host that never answers is reported (error_cb) after it, not after 30 s.
            "topic.metadata.propagation.max.ms": max(1, round(timeout * 1000)),
            "socket.connection.setup.timeout.ms": max(1000, round(timeout * 1000)),
            "error_cb": on_error,
            "logger": _client_log,
        },
    )
    started = time.monotonic()

    def unreachable() -> bool:
        """Nothing acknowledged for ``timeout`` seconds while the client says no broker (or
        the broker refused the credentials: that ends it at once)."""
        if refused:
            return True
        return acked == 0 and bool(broker_errors) and time.monotonic() - started > timeout

    produced = 0
    bad_input: StreamerError | None = None
    for record in _until_error(records):
        if isinstance(record, StreamerError):
            bad_input = record  # the records before it are still delivered and shown
            break
        while True:
            try:
                producer.produce(
                    topic, record.value, record.key, partition=record.partition,
                    headers=record.headers,
                    on_delivery=partial(delivered, at=record.source),
                )  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
                if unreachable():
                    break
        produced += 1
        producer.poll(0)
        if failures or unreachable():
            break
    while producer.flush(0.1) and not failures and not unreachable():
        pass  # deliveries are served by flush; it returns what is still in flight
    # Records still queued at an error are dropped with the producer, never sent later.
    if refused:
        raise refused_connection(settings.brokers, refused[0])
    if unreachable() or (failures and acked == 0 and failures[0][1].code() in _UNREACHABLE):
        cause = broker_errors[-1] if broker_errors else failures[0][1].str()
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.brokers}: no record acknowledged within "
            f"{timeout:g}s ({cause}); is the broker running? `streamer kafka up` starts a "
            "local one; --timeout (STREAMER_CONNECT_TIMEOUT) waits longer"
        )
    if bad_input is not None and not failures:
        raise bad_input
    if failures:
        at, err = failures[0]
        more = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
        hint = (
            "; does the topic exist? `streamer worker APP` creates an app's declared topics"
            if err.code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART)
            else ""
        )
        raise KafkaOperationError(
            f"{topic}: record from {at} refused: {err.str()}{more}; {acked} of {produced} "
            f"sent{hint}"
        )
    if produced == 0:
        raise ConfigError("nothing to send: the input had no JSON lines")
    return acked
