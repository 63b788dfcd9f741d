"""``--consumer-config`` for a peer that does not run on librdkafka (faust-streaming: aiokafka).

The options are librdkafka's, given to streamer, the raw loop and Quix Streams as they are.
faust gets one only where it has a setting for the same thing; the rest are reported as not
applied (in the JSON and the table's notes), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _seconds(ms: str) -> float:
    return float(ms) / 1000.0


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


FAUST_SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "auto.offset.reset": ("consumer_auto_offset_reset", str),
    "max.partition.fetch.bytes": ("consumer_max_fetch_size", int),
    "session.timeout.ms": ("broker_session_timeout", _seconds),
    "heartbeat.interval.ms": ("broker_heartbeat_interval", _seconds),
    "max.poll.interval.ms": ("broker_max_poll_interval", _seconds),
    "metadata.max.age.ms": ("consumer_metadata_max_age_ms", int),
    "connections.max.idle.ms": ("consumer_connections_max_idle_ms", int),
    "check.crcs": ("broker_check_crcs", _flag),
    "client.id": ("broker_client_id", str),
    "group.instance.id": ("consumer_group_instance_id", str),
}
"""librdkafka consumer option -> (faust setting, conversion), where faust has one."""


def faust_settings(config: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """faust ``App`` settings for the librdkafka options ``config``, and the options that
    faust has no setting for (in the order given)."""
    applied: dict[str, Any] = {}
    skipped: list[str] = []
    for key, value in config.items():
        if key in FAUST_SETTINGS:
            name, convert = FAUST_SETTINGS[key]
            applied[name] = convert(value)
        else:
            skipped.append(key)
    return applied, skipped
