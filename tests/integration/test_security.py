"""On the secured local broker (SASL_SSL, SCRAM-SHA-512, ACLs enforced): an app's workers run
with exactly the ACLs `streamer acls` names, every command takes client settings from
--command-config / --config, and refused credentials end in one line at once."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from streamer.kafka.local import LocalKafka
from tests.integration.test_metrics import free_port
from tests.kafkatools import ROOT, WorkerProcess, produce, read_all, run_cli, wait_until

# A second broker, several worker processes: one heavy scenario at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("heavy_scenario")

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


def test_no_password_in_logs_debug_output_endpoints_or_errors(
    secure_kafka: LocalKafka,
    admin_config: dict[str, str],
    admin_file: Path,
    new_user: Callable[[], User],
    eos_env: dict[str, str],
    tmp_path: Path,
) -> None:
    principal, user_file = new_user()
    password = next(
        line.split("=", 1)[1]
        for line in user_file.read_text().splitlines()
        if line.startswith("sasl.password=")
    )
    _grant(eos_env, principal, admin_file)
    produce(secure_kafka.bootstrap, eos_env["TEST_SRC"],
            ((b"k", str(i).encode()) for i in range(20)), admin_config)  # fmt: skip
    port = free_port()
    log_path = tmp_path / "worker.log"
    # Everything verbose at once: streamer's debug logs as JSON, librdkafka's own debug
    # contexts (security, broker, conf: it lists every client setting).
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "--debug", "--log-format", "json", "worker",
             "tests.apps.eos", "--instance", "w1", "--web-port", str(port),
             "--command-config", str(user_file), "--config", "debug=security,broker,conf"],
            cwd=ROOT, env={**os.environ, **eos_env}, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            read_all(secure_kafka.bootstrap, eos_env["TEST_ECHO"], expect=20, timeout=120,
                     config=admin_config)  # fmt: skip
            bodies = [_http(port, path) for path in ("/metrics", "/ready", "/health", "/x")]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    output = log_path.read_text(errors="replace")
    assert '"level": "DEBUG"' in output or '"level":"DEBUG"' in output  # it was verbose
    assert "sasl.password" in output  # librdkafka listed its settings ...
    assert password not in output  # ... and never the value
    for body in bodies:
        assert password not in body
    # Commands that fail, with the credentials in their settings, print no password either.
    failing = [
        ("--debug", "send", eos_env["TEST_SRC"], "--value", "1", "--brokers",
         secure_kafka.bootstrap, "--command-config", str(user_file), "--config",
         "ssl.ca.location=/nonexistent/ca.pem"),
        ("offsets", "show", "tests.apps.eos", "--command-config", str(user_file)),
        ("status", "tests.apps.eos", "--once", "--command-config", str(user_file)),
    ]  # fmt: skip
    for args in failing:
        done = run_cli(*args, env=eos_env, timeout=120)
        assert password not in done.stdout + done.stderr, args


def test_settings_repr_masks_credentials() -> None:
    from streamer import App

    app = App("masked", brokers="memory://masked", kafka_config={
        "sasl.password": "hunter2", "sasl.jaas.config": "x password=hunter2;",
        "sasl.oauthbearer.client.secret": "hunter2", "ssl.key.pem": "hunter2",
        "linger.ms": 5,
    }, producer_config={"ssl.keystore.password": "hunter2"})  # fmt: skip
    for text in (repr(app.settings), str(app.settings), repr(app)):
        assert "hunter2" not in text
    assert "'linger.ms': 5" in repr(app.settings)


def _http(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", None, 10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def _acls_of(env: dict[str, str]) -> list[Any]:
    """What `streamer acls` lists for tests.apps.eos configured by ``env``."""
    from streamer.acls import required_acls

    with mock.patch.dict(os.environ, env):
        spec = importlib.util.spec_from_file_location(
            f"eos_{uuid.uuid4().hex}", ROOT / "tests" / "apps" / "eos.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return required_acls(module.app)


def test_each_missing_acl_is_one_line_naming_it(
    admin_config: dict[str, str],
    new_user: Callable[[], User],
    eos_env: dict[str, str],
    tmp_path: Path,
) -> None:
    from streamer.acls import LITERAL, bindings

    # The app's declared topics exist already (created by the admin), so literal Create on
    # them is not needed; every other ACL is, and each run is a new app (new internal topics,
    # new group, new transactional ids).
    admin = AdminClient(admin_config)
    big = eos_env["TEST_ECHO"] + "-big"
    for future in admin.create_topics([NewTopic(big, num_partitions=1)]).values():
        future.result(30)

    def needed(env: dict[str, str]) -> list[Any]:
        return [a for a in _acls_of(env) if not (a.pattern == LITERAL and a.operation == "Create")]

    count = len(needed(eos_env))
    assert count >= 8  # Read src; Write echo, sums, big; Read/Write/Create prefix; group; txn
    for run in range(count):
        env = {**eos_env, "TEST_APP_ID": f"{eos_env['TEST_APP_ID']}-{run}"}
        acls = needed(env)
        left_out = acls.pop(run)
        principal, user_file = new_user()
        for future in admin.create_acls(bindings(acls, principal)).values():
            future.result(30)
        worker = WorkerProcess("tests.apps.eos", env, tmp_path, f"w{run}", instance="w1",
                               args=("--command-config", str(user_file)))  # fmt: skip
        try:
            code = _wait_exit(worker, timeout=120)
        finally:
            worker.close()
        lines = worker.log().strip().splitlines()
        what = left_out.describe()
        assert code != 0, (what, worker.log()[-2000:])
        assert lines[-1].startswith("error: not authorised: no ACL allows "), (what, lines[-3:])
        # An existing topic the principal may neither read nor write is invisible to it, so
        # the worker cannot tell it from a missing one: the line then names Create as well.
        resource = f"{left_out.resource_type}:{left_out.name}"
        assert resource in lines[-1] and left_out.operation in lines[-1], (what, lines[-1])
        assert "Traceback" not in worker.log()


def test_every_command_takes_client_settings(
    secure_kafka: LocalKafka,
    admin_config: dict[str, str],
    admin_file: Path,
    eos_env: dict[str, str],
    tmp_path: Path,
) -> None:
    src, app = eos_env["TEST_SRC"], "tests.apps.eos"
    env = {**eos_env, "STREAMER_STATE_DIR": str(tmp_path / "state")}
    # The settings come from the file, and --config adds (or overrides) single ones.
    config = ("--command-config", str(admin_file), "--config", "client.id=streamer-cli-test")
    sent = run_cli("send", src, "--key", "k", "--value", "5", "--app", app, *config, env=env)
    assert sent.returncode == 0, sent.stderr
    sent = run_cli("send", src, "--key", "k", "--value", "7", "--brokers",
                   secure_kafka.bootstrap, *config, env=env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    worker = WorkerProcess(app, env, tmp_path, "w", instance="w1", args=config)
    try:
        assert len(read_all(secure_kafka.bootstrap, eos_env["TEST_ECHO"], expect=2,
                            timeout=120, config=admin_config)) == 2  # fmt: skip
    finally:
        worker.terminate()
        worker.close()
    commands = [
        ("status", app, "--once"),
        ("offsets", "show", app),
        ("offsets", "reset", app, "--topic", src, "--to-earliest"),
        ("replay", app, "--topic", src, "--from-offset", "0", "--dry-run"),
        ("dlq", "show", app),
        ("tables", app),
    ]
    for command in commands:
        done = run_cli(*command, *config, env=env, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    replayed = run_cli("replay", app, "--topic", src, "--from-offset", "0", "--dry-run", *config,
                       env=env)  # fmt: skip
    assert "replayed 2 records" in replayed.stdout
    # Without the settings the same command cannot connect, and says so in one line.
    bare = run_cli("offsets", "show", app, env=env, timeout=120)
    assert bare.returncode != 0
    assert len(bare.stderr.strip().splitlines()) == 1, bare.stderr


def _committed(config: dict[str, str], group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def _ends(config: dict[str, str], topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": "ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def test_kill_9_under_exactly_these_acls_stays_exactly_once(
    secure_kafka: LocalKafka,
    admin_config: dict[str, str],
    admin_file: Path,
    new_user: Callable[[], User],
    eos_env: dict[str, str],
    tmp_path: Path,
) -> None:
    principal, user_file = new_user()
    _grant(eos_env, principal, admin_file)
    env = {**eos_env, "TEST_DELAY": "0.01", "STREAMER_STATE_DIR": str(tmp_path / "state")}
    records = [(f"k{i % 31}", i % 97) for i in range(3000)]
    produce(secure_kafka.bootstrap, env["TEST_SRC"],
            ((k.encode(), str(v).encode()) for k, v in records), admin_config)  # fmt: skip
    args = ("--command-config", str(user_file))
    first = WorkerProcess("tests.apps.eos", env, tmp_path, "first", instance="w1", args=args)
    second: WorkerProcess | None = None
    try:
        # Mid-stream: some outputs committed, most not yet.
        seen = read_all(secure_kafka.bootstrap, env["TEST_ECHO"], expect=300, timeout=120,
                        idle=60, config=admin_config)  # fmt: skip
        assert 300 <= len(seen) < len(records), len(seen)
        first.kill()
        # On another machine (no local state): its tables restore from the changelogs,
        # whose readers must get by without any group ACL.
        moved = {**env, "STREAMER_STATE_DIR": str(tmp_path / "state-moved")}
        second = WorkerProcess("tests.apps.eos", moved, tmp_path, "second", instance="w1",
                               args=args)  # fmt: skip
        ends = _ends(admin_config, env["TEST_SRC"])
        wait_until(
            lambda: _committed(admin_config, env["TEST_APP_ID"], env["TEST_SRC"]) == ends,
            "input not fully committed",
            timeout=240,
            workers=[second],
        )
        second.terminate()
        assert "restoring" in second.log() and "failed" not in second.log()
    finally:
        first.close()
        if second is not None:
            second.close()
    echoed = read_all(secure_kafka.bootstrap, env["TEST_ECHO"], expect=len(records),
                      config=admin_config)  # fmt: skip
    assert sorted(int(m.value()) for m in echoed) == sorted(v for _, v in records)
    running: dict[str, int] = defaultdict(int)
    expected: dict[str, list[int]] = defaultdict(list)
    for key, value in records:
        running[key] += value
        expected[key].append(running[key])
    got: dict[str, list[int]] = defaultdict(list)
    sums = read_all(secure_kafka.bootstrap, env["TEST_SUMS"], expect=len(records),
                    config=admin_config)  # fmt: skip
    for message in sorted(sums, key=lambda m: (m.partition(), m.offset())):
        got[message.key().decode()].append(int(message.value()))
    assert got == expected
