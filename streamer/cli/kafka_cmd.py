"""``streamer kafka up|down|status|logs``: a real local Apache Kafka broker for development.

Each command prints what happened in one sentence on stdout; progress while starting goes to
stderr.  Failures are :class:`~streamer.errors.StreamerError` subclasses, which the root group
prints as one line.  Instances are told apart by ``--port`` (each port has its own home under
the user cache directory, see :mod:`streamer.kafka.local`).
"""

from __future__ import annotations

import contextlib
import os
import time

import click
import orjson

from streamer.errors import LocalKafkaError
from streamer.kafka.local import KAFKA_VERSION, SECURITY_MODES, LocalKafka

_port_option = click.option(
    "--port", default=9092, show_default=True, type=click.IntRange(1, 65534),
    help="Broker port on 127.0.0.1 (the controller uses port + 1).",
)  # fmt: skip
_security_option = click.option(
    "--security", type=click.Choice(SECURITY_MODES), default="plaintext", show_default=True,
    help="plaintext, or sasl_ssl: TLS + SCRAM-SHA-512 users + ACLs enforced (its own instance).",
)  # fmt: skip


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def kafka() -> None:
    """Run a single-node Apache Kafka broker locally (Java 17+, no Docker needed)."""


@kafka.command()
@_port_option
@_security_option
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for it.")
def up(port: int, security: str, timeout: float) -> None:
    """Start the broker unless it already runs; return once it answers."""
    broker = LocalKafka(port, security=security)
    result = broker.ensure_running(_progress, timeout)
    if result.started:
        click.echo(
            f"started Kafka {KAFKA_VERSION} on {result.bootstrap} "
            f"(pid {result.pid}, logs: {result.log_file})"
        )
    else:
        click.echo(f"Kafka is already running on {result.bootstrap} (pid {result.pid})")
    if broker.secure is not None:
        _print_secure_settings(broker)


def _print_secure_settings(broker: LocalKafka) -> None:
    """What a client needs to connect: the files, and the settings for an app."""
    assert broker.secure is not None
    client, admin = broker.secure.write_client_files()
    settings = orjson.dumps(broker.client_config()).decode()
    click.echo(
        f"SASL_SSL with SCRAM-SHA-512; ACLs are enforced (no ACL: denied).\n"
        f"  user 'streamer' (rights only through ACLs): --command-config {client}\n"
        f"  user 'admin' (super user):                  --command-config {admin}\n"
        f"  CA certificate: {broker.secure.ca}\n"
        f"Grant an app its ACLs:\n"
        f"  streamer acls APP --principal User:streamer --execute --command-config {admin}\n"
        f"Run it as user 'streamer':\n"
        f"  export STREAMER_BROKERS={broker.bootstrap}\n"
        f"  export STREAMER_KAFKA_CONFIG='{settings}'"
    )


@kafka.command()
@_port_option
@_security_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds before SIGKILL.")
def down(port: int, security: str, timeout: float) -> None:
    """Stop the broker started by `up` on this port (never any other process)."""
    broker = LocalKafka(port, security=security)
    before = broker.status()
    if broker.down(timeout):
        click.echo(f"stopped Kafka on {before.bootstrap} (pid {before.pid})")
    else:
        click.echo(f"Kafka on {before.bootstrap} was not running")


@kafka.command()
@_port_option
@_security_option
def status(port: int, security: str) -> None:
    """Say whether the broker on this port runs, with its pid and log file."""
    st = LocalKafka(port, security=security).status()
    if st.running:
        click.echo(f"Kafka on {st.bootstrap} is running (pid {st.pid}, logs: {st.log_file})")
    else:
        click.echo(f"Kafka on {st.bootstrap} is stopped")


@kafka.command()
@_port_option
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@_security_option
def logs(port: int, security: str, lines: int, follow: bool) -> None:
    """Show the end of the broker's log."""
    broker = LocalKafka(port, security=security)
    if not broker.log_file.exists():
        raise LocalKafkaError(
            f"no log at {broker.log_file}: Kafka was never started on port {port} "
            f"(start it with `streamer kafka up --port {port}`)"
        )
    text = broker.tail(lines)
    if text:
        click.echo(text)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how --follow ends
            _follow(broker)


def _follow(broker: LocalKafka) -> None:
    """Print lines appended to the log; reopen it when a restart replaces the file."""
    path = broker.log_file
    fh = path.open("rb")
    fh.seek(0, os.SEEK_END)
    inode = os.fstat(fh.fileno()).st_ino
    try:
        while True:
            chunk = fh.read()
            if chunk:
                click.echo(chunk.decode(errors="replace"), nl=False)
                continue
            time.sleep(0.5)
            try:
                current = path.stat().st_ino
            except FileNotFoundError:
                continue
            if current != inode:  # `up` moved the old log to broker.log.1
                fh.close()
                fh = path.open("rb")
                inode = os.fstat(fh.fileno()).st_ino
    finally:
        fh.close()
