"""On the secured local broker (SASL_SSL, SCRAM-SHA-512, ACLs enforced): an app's workers run
with exactly the ACLs `streamer acls` names, every command takes client settings from
--command-config / --config, and refused credentials end in one line at once."""

from __future__ import annotations

import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from streamer.kafka.local import LocalKafka
from tests.kafkatools import WorkerProcess, produce, read_all, run_cli

pytest.importorskip("cryptography")

PARTITIONS = 3
User = tuple[str, Path]  # principal, its --command-config file


def _properties(path: Path, config: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    return path


@pytest.fixture
def admin_config(secure_kafka: LocalKafka) -> dict[str, str]:
    return {"bootstrap.servers": secure_kafka.bootstrap, **secure_kafka.client_config("admin")}


@pytest.fixture
def admin_file(secure_kafka: LocalKafka, tmp_path: Path) -> Path:
    return _properties(tmp_path / "admin.properties", secure_kafka.client_config("admin"))


@pytest.fixture
def new_user(secure_kafka: LocalKafka, admin_config: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """``new_user() -> (principal, properties file)``: a fresh SCRAM user with no ACLs."""
    admin = AdminClient(admin_config)

    def make() -> User:
        name, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        upsert = UserScramCredentialUpsertion(name, info, password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
        config = {**secure_kafka.client_config("streamer"), "sasl.username": name,
                  "sasl.password": password}  # fmt: skip
        return f"User:{name}", _properties(tmp_path / f"{name}.properties", config)

    return make


@pytest.fixture
def eos_env(admin_config: dict[str, str], secure_kafka: LocalKafka) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"TEST_SRC": f"src-{suffix}", "TEST_ECHO": f"echo-{suffix}",
             "TEST_SUMS": f"sums-{suffix}"}  # fmt: skip
    admin = AdminClient(admin_config)
    new = [NewTopic(name, num_partitions=PARTITIONS) for name in names.values()]
    for future in admin.create_topics(new).values():
        future.result(30)
    return {
        "STREAMER_BROKERS": secure_kafka.bootstrap,
        "TEST_APP_ID": f"secure-{suffix}",
        "TEST_PARTITIONS": str(PARTITIONS),
        **names,
    }


def _grant(env: dict[str, str], principal: str, admin_file: Path) -> None:
    done = run_cli("acls", "tests.apps.eos", "--principal", principal, "--execute",
                   "--command-config", str(admin_file), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


def _wait_exit(worker: WorkerProcess, timeout: float = 120) -> int:
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"worker still runs after {timeout}s:\n{worker.log()[-3000:]}"
        ) from None


def test_a_worker_with_exactly_the_listed_acls_runs_exactly_once(
    secure_kafka: LocalKafka,
    admin_config: dict[str, str],
    admin_file: Path,
    new_user: Callable[[], User],
    eos_env: dict[str, str],
    tmp_path: Path,
) -> None:
    principal, user_file = new_user()
    _grant(eos_env, principal, admin_file)
    records = [(f"k{i % 7}", i) for i in range(300)]
    produce(secure_kafka.bootstrap, eos_env["TEST_SRC"],
            ((k.encode(), str(v).encode()) for k, v in records), admin_config)  # fmt: skip
    worker = WorkerProcess("tests.apps.eos", eos_env, tmp_path, "w", instance="w1",
                           args=("--command-config", str(user_file)))  # fmt: skip
    try:
        echoed = read_all(secure_kafka.bootstrap, eos_env["TEST_ECHO"], expect=len(records),
                          timeout=120, config=admin_config)  # fmt: skip
        sums = read_all(secure_kafka.bootstrap, eos_env["TEST_SUMS"], expect=len(records),
                        timeout=60, config=admin_config)  # fmt: skip
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.terminate()
        worker.close()
    assert sorted(int(m.value()) for m in echoed) == sorted(v for _, v in records)
    running: dict[str, int] = defaultdict(int)
    expected: dict[str, list[int]] = defaultdict(list)
    for key, value in records:
        running[key] += value
        expected[key].append(running[key])
    got: dict[str, list[int]] = defaultdict(list)
    for message in sorted(sums, key=lambda m: (m.partition(), m.offset())):
        got[message.key().decode()].append(int(message.value()))
    assert got == expected
    assert "Traceback" not in worker.log()


def test_wrong_password_fails_fast_in_one_line(
    secure_kafka: LocalKafka, new_user: Callable[[], User], eos_env: dict[str, str]
) -> None:
    _, user_file = new_user()
    done = run_cli("send", eos_env["TEST_SRC"], "--value", "1", "--brokers",
                   secure_kafka.bootstrap, "--command-config", str(user_file),
                   "--config", "sasl.password=wrong-password", timeout=60)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: Kafka at {secure_kafka.bootstrap} refused the connection")
    assert "Authentication failed" in lines[0] and "wrong-password" not in lines[0]
