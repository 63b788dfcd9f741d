"""Co-partitioning: the topics whose partitions own an app's tables, the check that they
agree on a partition count, and how the group is told to keep partition *p* of each of them
on one worker.

Which topics: every topic the app's own agents read (internal agents such as a
``group_by``'s repartitioner own no table; a windowed table's change stream is an output), and
every topic a table is built from (``app.table_from``). Table partition *p* belongs to
partition number *p*: whichever of those topics' partition *p* a worker is given, it opens
the same table partition, restored once, and its changelog partition *p*.

How the group keeps them together (measured on Kafka 4.1 with librdkafka 2.16, see
``docs/joins.md``): the consumer group protocol of KIP-848 (``group.protocol=consumer``)
with the broker's ``range`` assignor gives partition *p* of every subscribed topic with the
same partition count to the same member, and moves them in the same heartbeat, so
incremental rebalances never split them. It works with transactional offset commits
(KIP-447); static membership does not mix well with it (see :func:`with_copartitioning`).
The classic protocol's client-side assignors cannot (``cooperative-sticky`` spreads each
topic on its own), so an app with several co-partitioned topics joins its group with that
protocol, unless the user chose ``group.protocol``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamer.errors import ConfigError

if TYPE_CHECKING:
    from streamer.app import App

log = logging.getLogger("streamer.worker")

# Consumer options of the KIP-848 protocol with the broker-side range assignor.
KIP848_OVERRIDES: dict[str, Any] = {
    "group.protocol": "consumer",
    "group.remote.assignor": "range",
}


def table_sources(app: App) -> list[str]:
    """The topics whose partitions own the app's (partitioned) tables, sorted; empty when
    the app has none."""
    if not app.tables:
        return []
    streams = {t for table in app.tables.values() if table.windowed for t in table.windowed.streams}
    # The app's own agents, and the internal ones that work on tables (table_from, join).
    read = {
        t.name for a in app.agents if not a.internal or a.table is not None for t in a.topics
    } - streams
    built = {table.source_topic for table in app.tables.values() if table.source_topic}
    return sorted(read | built)


def check_counts(counts: dict[str, int | None]) -> int | None:
    """The partition count shared by co-partitioned topics (None when none is known).
    Raises ConfigError, one line naming both counts, when two differ. Unknown counts
    (``None``: not declared, not yet created) are skipped."""
    known = sorted((name, n) for name, n in counts.items() if n is not None)
    for name, count in known[1:]:
        first, expected = known[0]
        if count != expected:
            raise ConfigError(
                f"topics {first!r} ({expected} partitions) and {name!r} ({count} partitions) "
                "feed the same tables and must be co-partitioned: give them the same "
                "partition count"
            )
    return known[0][1] if known else None


def check_declared(app: App) -> None:
    """Before any topic is created: the declared partition counts of co-partitioned topics
    agree (topics declared without a count are checked once they exist), and the topics of
    a windowed join are read by the join only (its exactly-once argument needs every record
    completed at dispatch; see streamer.state.stream_join)."""
    check_counts({name: app.topics[name].partitions for name in table_sources(app)})
    for join in app.joins.values():
        for topic in (join.left, join.right):
            others = [a.name for a in app.agents if a.table is not join and topic in a.topics]
            if others:
                raise ConfigError(
                    f"topic {topic.name!r} is joined by {join.name!r} and also read by "
                    f"{', '.join(others)}: a joined topic is read by its join only; read the "
                    "join's sink instead"
                )


def with_copartitioning(app: App, sources: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The consumer options ``overrides`` with what keeps co-partitioned partitions
    together: the KIP-848 protocol when several topics own tables and the user set no
    ``group.protocol``; else ``overrides`` unchanged.

    Under that protocol the worker's ``instance_id`` is not used as ``group.instance.id``
    (it still names the transactional id, which is what fences a predecessor under
    exactly-once): a static member killed with ``kill -9`` cannot join again under the same
    id until the broker's session timeout expires (UNRELEASED_INSTANCE_ID, a fatal error in
    librdkafka), which a restarted worker would otherwise meet every time; and the protocol's
    incremental assignment already avoids the stop-the-world rebalances static membership
    works around. A ``group.instance.id`` set in ``consumer_config`` is kept.
    """
    configured = {**app.settings.kafka_config, **app.settings.consumer_config}
    if len(sources) < 2 or "group.protocol" in configured:
        return overrides
    result = {**overrides, **KIP848_OVERRIDES}
    if "group.instance.id" in result and "group.instance.id" not in configured:
        del result["group.instance.id"]
        log.info(
            "topics %s are co-partitioned: the group uses the KIP-848 protocol, without "
            "static membership (instance_id %r still names the transactional id)",
            ", ".join(sources),
            app.settings.instance_id,
        )
    return result


__all__ = [
    "KIP848_OVERRIDES",
    "check_counts",
    "check_declared",
    "table_sources",
    "with_copartitioning",
]
