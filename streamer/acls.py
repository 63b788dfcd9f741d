"""The least-privilege ACLs an app's workers need, as data, as ``kafka-acls`` commands, or
created through the Admin API (``streamer acls APP --principal User:x [--execute]``).

What a worker does, and the ACL that allows it. Kafka implies Describe by Read and Write
(on topics, groups and transactional ids) and, since 3.0 (KIP-679), IdempotentWrite on the
cluster by Write on a topic, so neither is asked for:

=====================================  =================================================
resource                               operations, and why
=====================================  =================================================
Topic, literal, each topic it reads    Read: consume (and metadata, offsets)
Topic, literal, each topic it writes   Write: produce (sinks, ``send``)
Topic, literal, each declared topic    Create: only with ``topic_auto_create`` (the
                                       default), to create it when missing; not needed
                                       for topics that already exist
Topic, prefixed ``<app id>-``          Read, Write, Create: its own topics
                                       (changelogs, repartition, dead letters)
Group, literal ``<group id>``          Read: join the group, commit offsets
TransactionalId, prefixed ``<app id>-``  Write: exactly-once only, its transactional
                                       ids ``<app id>-<instance>``
=====================================  =================================================

A dead-letter topic given another name than ``<app id>-<agent>-dlq`` gets literal Write
and Create of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamer.app import App
from streamer.errors import KafkaAccessError
from streamer.kafka.access import access_denied

# Operation and resource names as the Kafka CLI and ACL listings spell them.
TOPIC, GROUP, TRANSACTIONAL_ID = "Topic", "Group", "TransactionalId"
LITERAL, PREFIXED = "literal", "prefixed"
_CLI_OPTION = {TOPIC: "--topic", GROUP: "--group", TRANSACTIONAL_ID: "--transactional-id"}


@dataclass(frozen=True, order=True)
class Acl:
    """One allow rule: ``principal`` may do ``operation`` on ``resource_type:name``
    (``pattern`` literal: exactly that name; prefixed: every name starting with it)."""

    resource_type: str
    pattern: str
    name: str
    operation: str

    def describe(self) -> str:
        """``Read on Topic:orders`` / ``Write on Topic:shop-* (prefixed)``."""
        suffix = "*" if self.pattern == PREFIXED else ""
        return f"{self.operation} on {self.resource_type}:{self.name}{suffix}"


def topic_operations(app: App) -> dict[str, set[str]]:
    """Each topic ``app``'s workers use, and what they do with it (Read, Write)."""
    ops: dict[str, set[str]] = {}
    for agent in app.agents:
        for topic in agent.topics:
            ops.setdefault(topic.name, set()).add("Read")
        for sink in agent.sinks:
            ops.setdefault(sink.name, set()).add("Write")
        if app.policy_for(agent).on_exhausted == "dead_letter":
            ops.setdefault(app.dead_letter_topic(agent), set()).add("Write")
    for name in app.topics:
        ops.setdefault(name, {"Write"})  # declared, never read: a `send` target
    for table in app.tables.values():
        ops.setdefault(table.changelog, set()).update(("Read", "Write"))  # restore, write
    return ops


def required_acls(app: App) -> list[Acl]:
    """Every ACL ``app``'s workers need, no more (see the module docstring), sorted."""
    prefix = f"{app.id}-"
    wanted = {(TOPIC, PREFIXED, prefix, op) for op in ("Read", "Write", "Create")}
    for name, operations in topic_operations(app).items():
        if name.startswith(prefix):
            continue  # covered by the prefixed rule
        if app.settings.topic_auto_create:
            operations = operations | {"Create"}
        wanted.update((TOPIC, LITERAL, name, op) for op in operations)
    wanted.add((GROUP, LITERAL, app.group_id, "Read"))
    if app.settings.exactly_once:
        wanted.add((TRANSACTIONAL_ID, PREFIXED, prefix, "Write"))
    return sorted(Acl(*parts) for parts in wanted)


def verify_access(admin: Any, app: App, group_id: str, timeout: float = 30.0) -> None:
    """Raise KafkaAccessError naming every operation on a topic or group ``group_id`` that
    no ACL allows ``app``'s workers (one line), before they consume anything.

    It asks the broker what this principal may do (``authorized_operations`` of
    DescribeTopics and DescribeGroups), so a missing ACL is a clear error at start rather
    than a consumer that waits or a transaction that aborts over and over. Topics must
    exist (call it after creating them). A broker that does not say (no authorizer, or too
    old) is trusted, as is the in-memory backend (it has no ACLs). Transactional ids cannot
    be asked about; ``init_transactions`` names a missing Write on one.
    """
    from confluent_kafka import KafkaError, KafkaException

    wanted = topic_operations(app)
    missing: list[str] = []
    for name, allowed in sorted(_topic_permissions(admin, sorted(wanted), timeout).items()):
        if allowed is not None:
            missing += [f"{op} on Topic:{name}" for op in sorted(wanted[name] - allowed)]
    group = admin.describe_consumer_groups(
        [group_id], include_authorized_operations=True, request_timeout=timeout
    )[group_id]
    try:
        group_allowed = _names(group.result(timeout))
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        denied = isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
        # Anything else (a coordinator still loading): unknown here; the consumer reports a
        # missing Read on the group itself (as an access error) when it joins.
        group_allowed = set() if denied else None
    if group_allowed is not None and "Read" not in group_allowed:
        missing.append(f"Read on Group:{group_id}")
    if missing:
        raise KafkaAccessError(
            f"not authorised: no ACL allows {', '.join(missing)} for this app's principal; "
            "grant them (`streamer acls APP --principal ...` lists every ACL the app needs)"
        )


def _topic_permissions(admin: Any, names: list[str], timeout: float) -> dict[str, set[str] | None]:
    """What this principal may do with each topic: None when the broker does not say; {}
    when it may not even see it. A topic created a moment ago may still be unknown to the
    broker's metadata: asked again for up to 10 s, then left unchecked."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection

    result: dict[str, set[str] | None] = {}
    deadline = time.monotonic() + 10.0
    while names:
        futures = admin.describe_topics(
            TopicCollection(names), include_authorized_operations=True, request_timeout=timeout
        )
        unknown = []
        for name, future in futures.items():
            try:
                result[name] = _names(future.result(timeout))
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                code = err.code() if isinstance(err, KafkaError) else None
                if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    result[name] = set()
                elif code == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                    unknown.append(name)
                else:
                    result[name] = None  # not an access question: others report it
        names = unknown
        if names:
            time.sleep(0.2)  # start-up only, before the worker consumes anything
    return result


def _names(description: Any) -> set[str] | None:
    """A description's ``authorized_operations`` (``[AclOperation.READ, ...]``) as
    ``{"Read", ...}``; None when the broker did not say (no authorizer, or a backend
    whose descriptions have no such field)."""
    operations = getattr(description, "authorized_operations", None)
    if operations is None:
        return None
    return {op.name.replace("_", " ").title().replace(" ", "") for op in operations}


def kafka_acls_commands(
    acls: list[Acl], principal: str, bootstrap: str, host: str = "*", command_config: str = ""
) -> list[str]:
    """One ``kafka-acls.sh --add`` command per resource, all its operations on it."""
    by_resource: dict[tuple[str, str, str], list[str]] = {}
    for acl in acls:
        by_resource.setdefault((acl.resource_type, acl.pattern, acl.name), []).append(acl.operation)
    config = f" --command-config {command_config}" if command_config else ""
    lines = []
    for (kind, pattern, name), operations in by_resource.items():
        ops = " ".join(f"--operation {op}" for op in operations)
        pattern_option = " --resource-pattern-type prefixed" if pattern == PREFIXED else ""
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap}{config} --add "
            f"--allow-principal {principal} --allow-host '{host}' {ops} "
            f"{_CLI_OPTION[kind]} {name}{pattern_option}"
        )
    return lines


def bindings(acls: list[Acl], principal: str, host: str = "*") -> list[Any]:
    """The confluent-kafka ``AclBinding`` objects of ``acls`` (for create/delete_acls)."""
    # The same classes confluent_kafka.admin re-exports; imported from where they are
    # defined because the package's type stubs do not mark the re-exports.
    from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

    kinds = {TOPIC: ResourceType.TOPIC, GROUP: ResourceType.GROUP,
             TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID}  # fmt: skip
    patterns = {LITERAL: ResourcePatternType.LITERAL, PREFIXED: ResourcePatternType.PREFIXED}
    return [
        AclBinding(
            kinds[acl.resource_type],
            acl.name,
            patterns[acl.pattern],
            principal,
            host,
            AclOperation[acl.operation.upper()],
            AclPermissionType.ALLOW,
        )
        for acl in acls
    ]


__all__ = [
    "Acl",
    "access_denied",
    "bindings",
    "kafka_acls_commands",
    "required_acls",
    "topic_operations",
    "verify_access",
]
