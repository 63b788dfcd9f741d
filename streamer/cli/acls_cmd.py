"""``streamer acls APP --principal User:x``: the least-privilege ACLs of an app's workers,
printed as ``kafka-acls.sh`` commands, or created with ``--execute`` (Admin API)."""

from __future__ import annotations

import click
from confluent_kafka import KafkaError, KafkaException

from streamer.acls import bindings, kafka_acls_commands, required_acls
from streamer.cli.client_config import client_options, load_cli_app
from streamer.errors import ConfigError, KafkaAccessError, KafkaOperationError
from streamer.kafka.clients import connect_admin

TIMEOUT = 30.0


@click.command()
@click.argument("app_path", metavar="APP")
@click.option("--principal", required=True, help="Who runs the workers, e.g. User:orders-app.")
@click.option("--host", default="*", show_default=True, help="Host the ACLs allow.")
@click.option("--execute", is_flag=True, help="Create them (Admin API) instead of printing.")
@client_options
def acls(app_path: str, principal: str, host: str, execute: bool) -> None:
    """Print (or create) the ACLs APP's workers need, and no more (see docs/security.md)."""
    kind, sep, name = principal.partition(":")
    if not sep or not kind or not name:
        raise ConfigError(f"--principal must be TYPE:NAME (like User:alice), not {principal!r}")
    app = load_cli_app(app_path)
    needed = required_acls(app)
    settings = app.settings
    if not execute:
        # The Java tool reads Java client properties (not librdkafka's): add your own
        # --command-config to these lines on a secured cluster.
        for line in kafka_acls_commands(needed, principal, settings.brokers, host):
            click.echo(line)
        return
    admin = connect_admin(
        app.backend, settings.brokers, dict(settings.kafka_config), settings.connect_timeout
    )
    # Not part of the Backend seam (only a real cluster has an authorizer).
    create_acls = getattr(admin, "create_acls", None)
    if create_acls is None:
        raise KafkaOperationError(f"{app.backend!r} takes no ACLs (it has no authorizer)")
    futures = create_acls(bindings(needed, principal, host), request_timeout=TIMEOUT)
    for future in futures.values():
        try:
            future.result(TIMEOUT)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code == KafkaError.SECURITY_DISABLED:
                raise KafkaOperationError(
                    f"the cluster at {settings.brokers} has no authorizer, so it takes no ACLs "
                    "(authorizer.class.name is unset)"
                ) from None
            if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
                raise KafkaAccessError(
                    "not authorised to create ACLs (Alter on Cluster:kafka-cluster): pass an "
                    "administrator's settings with --command-config"
                ) from None
            raise KafkaOperationError(f"creating ACLs failed: {exc}") from None
    click.echo(f"created {len(needed)} ACLs for {principal} on {settings.brokers}")


__all__ = ["acls"]
