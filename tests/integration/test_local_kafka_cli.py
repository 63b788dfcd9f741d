"""`streamer kafka up|status|down` as a user runs them: the real CLI in a subprocess.

It uses the shared jar cache (HOME / XDG_CACHE_HOME untouched); the instance home is the
default one for a fresh free port, wiped at the end, so it never meets another broker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamer.kafka.local import KAFKA_VERSION, LocalKafka
from streamer.kafka.ports import free_port_pair

_CLI = [sys.executable, "-c", "from streamer.cli import main; main()"]


def _streamer(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*_CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"streamer {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc


def _pid(text: str) -> int:
    match = re.search(r"\(pid (\d+)", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.timeout(400)
def test_up_status_down_cycle() -> None:
    port = free_port_pair()
    bootstrap = f"127.0.0.1:{port}"
    broker = LocalKafka(port)  # the same instance the CLI manages for --port
    try:
        first = _streamer("kafka", "up", "--port", str(port))
        assert f"started Kafka {KAFKA_VERSION} on {bootstrap}" in first.stdout
        pid = _pid(first.stdout)
        assert broker.status().pid == pid

        second = _streamer("kafka", "up", "--port", str(port))
        assert f"Kafka is already running on {bootstrap} (pid {pid})" in second.stdout
        assert "starting" not in second.stderr  # nothing new was launched
        assert broker.status().pid == pid

        status = _streamer("kafka", "status", "--port", str(port))
        assert f"Kafka on {bootstrap} is running (pid {pid}" in status.stdout

        # Records with historical timestamps (replays, tests) are never deleted by time.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = f"kept-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(timeout=30)
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        assert configs["retention.ms"].value == "-1"
        # The only broker is not fenced for a heartbeat a loaded machine delayed.
        node = ConfigResource(ConfigResource.Type.BROKER, "1")
        broker_configs = admin.describe_configs([node])[node].result(timeout=30)
        assert broker_configs["broker.session.timeout.ms"].value == "30000"
        # Its internal topics are small: a restart loads them in seconds, not minutes.
        for internal in ("offsets.topic.num.partitions", "transaction.state.log.num.partitions"):
            assert broker_configs[internal].value == "4"

        logs = _streamer("kafka", "logs", "--port", str(port), "-n", "200")
        assert "Kafka Server started" in logs.stdout

        down = _streamer("kafka", "down", "--port", str(port))
        assert f"stopped Kafka on {bootstrap} (pid {pid})" in down.stdout

        after = _streamer("kafka", "status", "--port", str(port))
        assert f"Kafka on {bootstrap} is stopped" in after.stdout
        assert not broker.status().running

        again = _streamer("kafka", "down", "--port", str(port))
        assert "was not running" in again.stdout
    finally:
        broker.wipe()  # stops the broker if an assertion fired while it ran


def test_logs_without_a_broker_is_one_line_error() -> None:
    port = free_port_pair()
    proc = subprocess.run(
        [*_CLI, "kafka", "logs", "--port", str(port)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: no log at {LocalKafka(port).log_file}: Kafka was never started on port {port} "
        f"(start it with `streamer kafka up --port {port}`)"
    ]


@pytest.mark.timeout(400)
def test_secured_broker_authenticates_encrypts_and_denies_without_acls() -> None:
    import json
    import stat

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    port = free_port_pair()
    bootstrap = f"127.0.0.1:{port}"
    broker = LocalKafka(port, security="sasl_ssl")
    try:
        up = _streamer("kafka", "up", "--security", "sasl_ssl", "--port", str(port))
        assert "SASL_SSL with SCRAM-SHA-512; ACLs are enforced" in up.stdout
        printed = re.search(r"STREAMER_KAFKA_CONFIG='(.+)'", up.stdout)
        assert printed, up.stdout
        user = json.loads(printed.group(1))
        assert user["security.protocol"] == "SASL_SSL" and user["sasl.username"] == "streamer"
        assert f"STREAMER_BROKERS={bootstrap}" in up.stdout
        for name in ("client.properties", "admin.properties", "credentials.json"):
            mode = (broker.home / name).stat().st_mode
            assert stat.S_IMODE(mode) == 0o600, name  # they hold passwords

        admin = AdminClient({"bootstrap.servers": bootstrap, **broker.client_config("admin")})
        assert admin.list_topics(timeout=30).brokers  # the super user gets in
        app = AdminClient({"bootstrap.servers": bootstrap, **user})
        with pytest.raises(KafkaException) as denied:
            app.create_topics([NewTopic("not-allowed", 1)])["not-allowed"].result(30)
        assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        plain = AdminClient({"bootstrap.servers": bootstrap, "logger": _Quiet()})
        with pytest.raises(KafkaException):  # no PLAINTEXT listener to talk to
            plain.list_topics(timeout=5)
    finally:
        broker.wipe()


class _Quiet:
    def log(self, *args: object) -> None:
        pass
