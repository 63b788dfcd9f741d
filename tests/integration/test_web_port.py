"""A worker whose web port is taken ends at once: non-zero exit, one line, nothing consumed."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.kafkatools import WorkerProcess


def test_worker_exits_with_one_line_when_its_web_port_is_taken(
    kafka_bootstrap: str, create_topic, unique_name, tmp_path: Path
) -> None:
    app_id = unique_name("webport")
    env = {
        "STREAMER_BROKERS": kafka_bootstrap,
        "TEST_APP_ID": app_id,
        "TEST_SRC": create_topic("webport-in"),
        "TEST_OUT": create_topic("webport-out"),
    }
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        worker = WorkerProcess(
            "tests.apps.echo", {**env, "STREAMER_WEB_PORT": str(port)}, tmp_path, "w"
        )
        try:
            # Generous bound: the point is that it exits by itself, not how fast.
            code = worker.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            worker.close()
            raise AssertionError(f"worker did not exit; log:\n{worker.log()}") from None
        finally:
            worker.close()
    lines = [line for line in worker.log().splitlines() if line.strip()]
    assert code != 0
    assert lines == [
        f"error: cannot serve the web endpoints on 127.0.0.1:{port}: the port is already in "
        "use by another process; choose another --web-port (STREAMER_WEB_PORT), 0 for any "
        "free port, or stop that process"
    ]
    # It never joined its group: nothing was consumed, no member to time out.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    groups = admin.list_consumer_groups().result(timeout=30)
    assert app_id not in {g.group_id for g in groups.valid}
