"""The least-privilege ACLs an app's workers need, as data, as ``kafka-acls`` commands, or
created through the Admin API (``streamer acls APP --principal User:x [--execute]``).

What a worker does, and the ACL that allows it (Kafka 3.0+; IdempotentWrite on the cluster is
implied by Write on a topic since KIP-679, so it is not asked for):

=====================================  =================================================
resource                               operations, and why
=====================================  =================================================
Topic, literal, each topic it reads    Read, Describe: consume; metadata and offsets
Topic, literal, each topic it writes   Write, Describe: produce (sinks, ``send``)
Topic, literal, each declared topic    Create: only with ``topic_auto_create`` (the
                                       default), to create it when missing
Topic, prefixed ``<app id>-``          Read, Write, Describe, Create: its own topics
                                       (changelogs, repartition, dead letters)
Group, literal ``<group id>``          Read: join the group, commit offsets
TransactionalId, prefixed ``<app id>-``  Write, Describe: exactly-once only, its
                                       transactional ids ``<app id>-<instance>``
=====================================  =================================================

A dead-letter topic given another name than ``<app id>-<agent>-dlq`` gets literal Write,
Describe and Create of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamer.app import App

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


def required_acls(app: App) -> list[Acl]:
    """Every ACL ``app``'s workers need, no more (see the module docstring), sorted."""
    prefix = f"{app.id}-"
    wanted: set[tuple[str, str, str, str]] = set()

    def topic(name: str, *operations: str) -> None:
        if name.startswith(prefix):
            return  # covered by the prefixed rule below
        for op in operations:
            wanted.add((TOPIC, LITERAL, name, op))

    read = {t.name for agent in app.agents for t in agent.topics}
    for name in app.topics:
        if name in read:
            topic(name, "Read", "Describe")
        else:  # declared and not read: a sink or a `send` target
            topic(name, "Write", "Describe")
        if app.settings.topic_auto_create:
            topic(name, "Create")
    for agent in app.agents:
        for sink in agent.sinks:
            topic(sink.name, "Write", "Describe")
        if app.policy_for(agent).on_exhausted == "dead_letter":
            topic(app.dead_letter_topic(agent), "Write", "Describe", "Create")
    for op in ("Read", "Write", "Describe", "Create"):
        wanted.add((TOPIC, PREFIXED, prefix, op))
    wanted.add((GROUP, LITERAL, app.group_id, "Read"))
    if app.settings.exactly_once:
        for op in ("Write", "Describe"):
            wanted.add((TRANSACTIONAL_ID, PREFIXED, prefix, op))
    return sorted(Acl(*parts) for parts in wanted)


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


__all__ = ["Acl", "bindings", "kafka_acls_commands", "required_acls"]
