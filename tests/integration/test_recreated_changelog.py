"""A changelog topic deleted and created again under the same name (as
``offsets reset --reset-state`` does) must never be mistaken for the one local state was
built from, even when the stored offset falls inside the new topic's range."""

from __future__ import annotations

import threading
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from streamer.kafka.admin import topic_ids
from streamer.kafka.backend import ConfluentBackend
from streamer.state.recovery import restore
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore
from tests.kafkatools import produce, wait_until


def _create(admin: AdminClient, name: str) -> None:
    errors: list[Exception] = []

    def created() -> bool:
        try:
            admin.create_topics([NewTopic(name, 1)])[name].result(timeout=30)
        except Exception as exc:  # a topic just deleted may still be going away: try again
            errors.append(exc)
            return False
        return True

    wait_until(created, lambda: f"cannot create {name}: {errors[-1:]}", timeout=60)
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, f"{name} not visible")


def _restore(bootstrap: str, store: PartitionStore, name: str, admin: AdminClient) -> int:
    changelog_id = topic_ids(admin, [name])[name]
    result = restore(store, f"t[{name}]", name, 0, {"bootstrap.servers": bootstrap},
                     ConfluentBackend(), threading.Event(), changelog_id=changelog_id)  # fmt: skip
    return result.restored


def test_a_recreated_changelog_rebuilds_local_state(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = unique_name("changelog")
    _create(admin, name)
    produce(kafka_bootstrap, name, [(f"k{i}".encode(), b"old") for i in range(10)])
    store = PartitionStore(tmp_path / "store")
    assert _restore(kafka_bootstrap, store, name, admin) == 10
    assert store.meta_offset(CHANGELOG_OFFSET) == 10

    admin.delete_topics([name])[name].result(timeout=30)
    _create(admin, name)
    produce(kafka_bootstrap, name, [(f"k{i}".encode(), b"new") for i in range(20)])
    # The stored offset (10) lies inside the new topic's range [0, 20]: only the topic's
    # id tells that local state came from another topic.
    assert _restore(kafka_bootstrap, store, name, admin) == 20
    assert dict(store.items()) == {f"k{i}".encode(): b"new" for i in range(20)}
    store.close()
