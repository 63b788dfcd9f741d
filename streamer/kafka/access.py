"""Authorization failures as one line naming the missing ACL.

A broker with ACLs answers an operation no ACL allows with ``*_AUTHORIZATION_FAILED``.
Retrying never helps (an administrator has to grant it), so every place that meets one
turns it into :class:`~streamer.errors.KafkaAccessError` through :func:`access_denied`,
and the worker stops with that line instead of logging and waiting.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from streamer.errors import KafkaAccessError

# Refused credentials or a failed TLS handshake never heal by retrying: whoever meets one
# (librdkafka reports them only through error_cb) stops at once with refused_connection().
ACCESS_FAILURES = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})

_HINT = "grant it (`streamer acls APP --principal ...` lists every ACL the app needs)"


def access_denied(
    error: KafkaError | KafkaException | None,
    topic: str | None = None,
    group: str | None = None,
    *,
    operation: str = "",
    transactional_id: str | None = None,
) -> KafkaAccessError | None:
    """The KafkaAccessError for ``error`` if it is an authorization failure, else None.

    ``operation`` (Read, Write, Create, ...) and the resource names say which ACL is
    missing; without an operation the message names the usual ones for that resource.
    Without ``group``, a group authorization failure is not the caller's concern (a
    consumer whose group id is a formality: assign, no commits) and gives None.
    """
    if isinstance(error, KafkaException):
        error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
    if error is None:
        return None
    code = error.code()
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        what = f"{operation or 'Read/Write/Describe'} on Topic:{topic or '(unnamed)'}"
        if "(" in what:  # "Create (or ...) on Topic:x" reads better as "Create on Topic:x (or ...)"
            op, _, rest = what.partition(" (")
            note, _, resource = rest.partition(") on ")
            what = f"{op} on {resource} ({note})"
    elif code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        if group is None:
            return None
        what = f"{operation or 'Read'} on Group:{group}"
    elif code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        what = f"{operation or 'Write/Describe'} on TransactionalId:{transactional_id or '?'}"
    elif code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        what = f"{operation or 'the operation'} on Cluster:kafka-cluster"
    else:
        return None
    return KafkaAccessError(f"not authorised: no ACL allows {what}; {_HINT}")


def refused_connection(brokers: str, detail: str) -> KafkaAccessError:
    """The one line for a broker that refused the credentials or the TLS handshake."""
    return KafkaAccessError(
        f"Kafka at {brokers} refused the connection: {detail}; check sasl.username, "
        "sasl.password and ssl.ca.location in kafka_config (or --config/--command-config)"
    )


__all__ = ["ACCESS_FAILURES", "access_denied", "refused_connection"]
