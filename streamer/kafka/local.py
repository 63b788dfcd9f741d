"""A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM), no Docker.

Used by ``streamer kafka up|down|status|logs`` and by the pytest plugin's ``kafka_bootstrap``
fixture.  The jars come from Maven Central once per version (see :mod:`streamer.kafka.jars`)
or from ``$KAFKA_HOME/libs``; the broker runs detached from the calling process, so it
outlives ``streamer kafka up`` and is stopped with :meth:`LocalKafka.down`.

One *instance* is one directory (its ``home``)::

    <home>/server.properties   rewritten on every start (ports may change with a custom home)
    <home>/log4j2.properties   copied from the package on every start
    <home>/cluster.id          chosen once; the storage is formatted with it once
    <home>/data/               log.dirs (and the KRaft metadata log)
    <home>/broker.log          the JVM's stdout+stderr for the current run (.1: previous run)
    <home>/jvm.log             the JVM's safepoint and GC pauses
    <home>/broker.pid          pid of the running JVM, removed by down()

Only the JVM whose pid is recorded in ``broker.pid`` *and* whose command line names this
home's ``server.properties`` is ever considered "ours": a recycled pid or another broker on
the machine is never signalled.

(About 515 lines: one broker's life, configure, format, spawn, probe and stop, read in one
place; the secured broker's half already lives in ``streamer.kafka.local_secure``.)
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamer.errors import LocalKafkaError, ToolMissingError
from streamer.kafka import jars
from streamer.kafka.jars import Progress
from streamer.kafka.local_secure import (
    ADMIN_USER,
    APP_USER,
    SecureFiles,
    format_args,
    make_certificates,
    server_config,
)
from streamer.kafka.ports import HOST, port_is_free

SECURITY_MODES = ("plaintext", "sasl_ssl")
"""``plaintext`` (the default) or ``sasl_ssl`` (see :mod:`streamer.kafka.local_secure`)."""

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka version the local broker runs (jars resolved from Maven Central)."""

_REPORT_EVERY = 2.0  # seconds between "waiting for broker" progress lines


@dataclass(frozen=True)
class BrokerStatus:
    """A snapshot of one LocalKafka instance. ``running`` means its own JVM is alive."""

    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path
    home: Path


@dataclass(frozen=True)
class UpResult:
    """What :meth:`LocalKafka.ensure_running` did: ``started`` is False if it was already up."""

    bootstrap: str
    pid: int
    started: bool
    log_file: Path


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid(): URL-safe base64 of 16 random bytes without padding; it skips
    # ids starting with "-" because the command-line tools would read them as options.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _reap_and_check_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process; reaps it if it is our dead child."""
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: alive
        return True


def _cmdline(pid: int) -> list[str]:
    try:
        return [str(arg) for arg in psutil.Process(pid).cmdline()]
    except psutil.Error:
        return []


class _ProbeLog:
    """librdkafka logger for readiness probes: "connection refused" while the JVM starts is
    expected, so it goes to DEBUG instead of stderr."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        logger.debug("probe: " + msg, *args)


# A light broker's JVM (see LocalKafka): the quick compiler only; and no safepoint every
# second just in case (GuaranteedSafepointInterval): a safepoint stops every Java thread
# until the last one reaches it, and on a saturated machine that wait grew to seconds
# (the pause log of a stress run: 1.6 s to reach one, then no answer for 30 s).
LIGHT_JVM = (
    "-XX:TieredStopAtLevel=1",
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:GuaranteedSafepointInterval=0",
)


class LocalKafka:
    """One local single-node KRaft broker, identified by its port and its home directory.

    ``port`` is the PLAINTEXT listener, ``port + 1`` the controller listener (both on
    127.0.0.1).  ``home`` defaults to ``<cache>/streamer/kafka/<version>/broker-<port>``;
    ``kafka_home`` (default: env ``KAFKA_HOME``) makes it use ``<kafka_home>/libs`` instead
    of Maven.  Methods are safe to call from several processes: start-up holds a lock in the
    home, and stop only signals the JVM this home started.

    ``light`` is for short-lived brokers (a test session's): the JVM compiles with the quick
    compiler only. A fresh broker spends more CPU compiling its hot paths with the optimizing
    compiler than serving a test's records (measured: start-up 2.4 s of CPU instead of
    3.4-4.7 s, a small transactional workload 2.1 s instead of 2.9-4.8 s), and on a crowded
    machine that CPU is what its clients wait for. It also runs fewer pool threads and no
    periodic safepoint (``LIGHT_JVM``, ``_server_config``): on a saturated machine every
    thread that wakes queues for a core, and a safepoint waits for all of them. A long-lived
    broker (``streamer kafka up``, the benchmark's) keeps the optimizing compiler (it pays
    off within minutes) and Kafka's defaults.
    """

    def __init__(
        self,
        port: int = 9092,
        *,
        home: Path | None = None,
        kafka_home: Path | None = None,
        controller_port: int | None = None,
        security: str = "plaintext",
        light: bool = False,
    ) -> None:
        if security not in SECURITY_MODES:
            raise LocalKafkaError(f"unknown security {security!r}; use one of {SECURITY_MODES}")
        self.port = port
        self.controller_port = port + 1 if controller_port is None else controller_port
        # A secured broker is another instance: its own storage (SCRAM users live there).
        suffix = "" if security == "plaintext" else f"-{security}"
        default_home = jars.version_dir(KAFKA_VERSION) / f"broker-{port}{suffix}"
        self.home = (home or default_home).absolute()
        self.security = security
        self.light = light
        self.secure = SecureFiles(self.home) if security == "sasl_ssl" else None
        env_home = os.environ.get("KAFKA_HOME")
        self.kafka_home = kafka_home or (Path(env_home) if env_home else None)
        # The JVM this object started, if any: polling it reaps it and tells Popen it ended.
        self._proc: subprocess.Popen[bytes] | None = None

    def client_config(self, user: str = APP_USER) -> dict[str, str]:
        """librdkafka settings a client needs besides ``bootstrap.servers`` ({} for
        PLAINTEXT); with ``sasl_ssl``, those of SCRAM ``user`` (``streamer`` or ``admin``)."""
        return {} if self.secure is None else self.secure.client_config(user)

    # -- paths --------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:<port>"``, the address clients connect to."""
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's log (JVM stdout and stderr) for the current or last run."""
        return self.home / "broker.log"

    @property
    def server_properties(self) -> Path:
        """The broker's config; its path on the JVM's command line identifies our process."""
        return self.home / "server.properties"

    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def _data_dir(self) -> Path:
        return self.home / "data"

    # -- public operations --------------------------------------------------------------
    def up(self, progress: Progress = _print_stderr, timeout: float = 120.0) -> str:
        """Make sure this instance's broker runs and answers; return its bootstrap address.

        Starts nothing if it already runs (and says so via ``progress``).  Blocks until the
        broker answers a metadata request or ``timeout`` seconds pass.  Raises
        :class:`ToolMissingError` (no java / mvn) or :class:`LocalKafkaError` (port taken,
        JVM exited, no answer in time) with a one-line cause, plus the log's last lines.
        """
        result = self.ensure_running(progress, timeout)
        if result.started:
            progress(
                f"Kafka {KAFKA_VERSION} is up on {result.bootstrap} "
                f"(pid {result.pid}, logs: {result.log_file})"
            )
        else:
            progress(f"Kafka {KAFKA_VERSION} is already running on {result.bootstrap} "
                     f"(pid {result.pid})")  # fmt: skip
        return result.bootstrap

    def ensure_running(
        self, progress: Progress = _print_stderr, timeout: float = 120.0
    ) -> UpResult:
        """Like :meth:`up`, but tells whether it started the broker and reports no summary."""
        self.home.mkdir(parents=True, exist_ok=True)
        # One starter per home: a second `up` waits, then finds the first one's broker.
        with jars.file_lock(self.home / "up.lock"):
            pid = self._running_pid()
            if pid is not None:
                self._wait_ready(pid, progress, timeout, started_now=False)
                return UpResult(self.bootstrap, pid, started=False, log_file=self.log_file)
            java = shutil.which("java")
            if java is None:
                raise ToolMissingError(
                    "Java 17+ is needed to run the local Kafka broker: install a JDK "
                    "(apt-get install openjdk-17-jre-headless), or run Kafka elsewhere "
                    "(docker compose up -d) and set STREAMER_TEST_BROKERS to its address"
                )
            libs = self._libs(progress)
            for port, what in ((self.port, "broker"), (self.controller_port, "controller")):
                if not port_is_free(port):
                    raise LocalKafkaError(
                        f"port {port} ({what} listener) on {HOST} is already in use by another "
                        "process; choose another --port or stop that process"
                    )
            self._write_configs()
            self._format_once(java, libs, progress)
            proc = self._spawn(java, libs)
            progress(f"starting Kafka {KAFKA_VERSION} on {self.bootstrap} (pid {proc.pid})")
            try:
                self._wait_ready(proc.pid, progress, timeout, started_now=True)
            except BaseException:
                # Never leave a half-started JVM behind (also on Ctrl-C): it would hold the
                # ports and the data directory lock.
                self._stop_pid(proc.pid, timeout=10.0)
                self._pid_file.unlink(missing_ok=True)
                raise
            return UpResult(self.bootstrap, proc.pid, started=True, log_file=self.log_file)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop this instance's broker: SIGTERM (controlled shutdown), SIGKILL after
        ``timeout`` seconds.  Returns True if a broker was stopped, False if none ran.
        Never signals a process that is not this home's JVM."""
        pid = self._running_pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)  # stale pid file of a dead broker
            return False
        self._stop_pid(pid, timeout)
        self._pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        """Whether this instance's JVM is alive (it does not probe the Kafka protocol)."""
        pid = self._running_pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.log_file, self.home)

    def tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of :attr:`log_file` ("" if there is no log yet)."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                # Read backwards in growing chunks so a big log is not read whole.
                chunk = 8192
                while True:
                    start = max(0, size - chunk)
                    fh.seek(start)
                    data = fh.read()
                    if start == 0 or data.count(b"\n") > lines:
                        break
                    chunk *= 4
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""

    def wipe(self) -> None:
        """Stop the broker if it runs, then delete the whole home (data, logs, config)."""
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)

    # -- internals ----------------------------------------------------------------------
    def _running_pid(self) -> int | None:
        """The recorded pid if it is alive and is our JVM, else None."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not self._alive(pid):
            return None
        args = _cmdline(pid)
        # A recycled pid belongs to some other program: it must be java, running our config.
        if not args or not Path(args[0]).name.startswith("java"):
            return None
        return pid if str(self.server_properties) in args else None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _reap_and_check_alive(pid)

    def _libs(self, progress: Progress) -> Path:
        if self.kafka_home is not None:
            return jars.kafka_home_libs(self.kafka_home)
        return jars.resolve_libs(KAFKA_VERSION, progress)

    def _server_config(self) -> dict[str, str]:
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._data_dir),
            # One node: internal topics with one replica, and 4 partitions, not 50 (a restarted
            # broker loads them one by one, minutes on a crowded machine).
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Test groups should join at once rather than wait 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            # The KIP-848 group protocol (apps whose tables several topics feed, see
            # streamer.worker.copartition) keeps its timeouts on the broker: the same as the
            # classic ones streamer's consumers set (10 s session, 1 s heartbeat).
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "1000",
            "num.partitions": "1",  # topics exist because someone declared them,
            "auto.create.topics.enable": "false",  # never by a typo in a consumer
            # The only broker must not be fenced for a heartbeat a loaded machine delayed (9 s
            # by default); after a kill -9 it re-registers once the old session expired.
            "broker.session.timeout.ms": "30000",
            "initial.broker.registration.timeout.ms": "120000",
            # Replays and tests carry historical timestamps: keep records until deleted.
            "log.retention.ms": "-1",
            # Hung transactions of killed test producers are aborted within seconds.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "10000",
        }
        if self.light:
            # A test session's broker serves a few clients on a shared machine: every idle
            # pool thread still wakes a few times a second (300 ms polls), and on a saturated
            # machine those wake-ups queue behind each other and delay the ones with work.
            config.update({
                "num.network.threads": "1",  # default 3 per listener
                "num.io.threads": "2",  # default 8
                "background.threads": "2",  # default 10
                "num.recovery.threads.per.data.dir": "1",  # default 2
            })  # fmt: skip
        if self.secure is not None:
            config.update(server_config(self.secure, HOST, self.port, self.controller_port))
        return config

    def _write_configs(self) -> None:
        body = "".join(f"{k}={v}\n" for k, v in self._server_config().items())
        header = f"# written by streamer.kafka.local for Kafka {KAFKA_VERSION}; do not edit\n"
        self.server_properties.write_text(header + body, encoding="utf-8")
        if self.secure is not None:
            self.server_properties.chmod(0o600)  # it holds the broker's passwords
            make_certificates(self.secure, HOST)  # a fresh throw-away CA on every start
            self.secure.write_client_files()
        (self.home / "log4j2.properties").write_text(
            jars.resource_text("log4j2.properties"), encoding="utf-8"
        )

    def _jvm(self, java: str, libs: Path, heap: str) -> list[str]:
        log4j = self.home / "log4j2.properties"
        return [java, f"-Xmx{heap}", f"-Dlog4j2.configurationFile={log4j}",
                "-Djava.awt.headless=true", "-cp", f"{libs}/*"]  # fmt: skip

    def _format_once(self, java: str, libs: Path, progress: Progress) -> None:
        # The storage is formatted once; formatting again would refuse (or lose data).
        if (self._data_dir / "meta.properties").exists():
            return
        id_file = self.home / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.exists() else _new_cluster_id()
        id_file.write_text(cluster_id + "\n")
        progress(f"formatting storage in {self._data_dir} (cluster id {cluster_id})")
        cmd = [*self._jvm(java, libs, "256m"), "kafka.tools.StorageTool", "format",
               "-t", cluster_id, "-c", str(self.server_properties)]  # fmt: skip
        if self.secure is not None:
            cmd += format_args(self.secure)  # the SCRAM users exist from the first start
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
            raise LocalKafkaError(
                f"formatting Kafka storage in {self._data_dir} failed (exit {proc.returncode}):\n"
                + "\n".join(lines)
            )

    def _spawn(self, java: str, libs: Path) -> subprocess.Popen[bytes]:
        if self.log_file.exists():
            # Keep the previous run's log; start-up errors quote only this run's lines.
            os.replace(self.log_file, self.log_file.with_name("broker.log.1"))
        # No memory-mapped statistics file: writing it at a safepoint blocks while the disk
        # flushes, freezing the whole broker. The pause log (asynchronous) shows what remains.
        jvm_log = f"file={self.home / 'jvm.log'}:time,uptime,level,tags:filecount=2,filesize=10m"
        cmd = [*self._jvm(java, libs, "512m"), "-Xms256m", "-XX:+UseG1GC",
               "-XX:+PerfDisableSharedMem", "-Xlog:async", f"-Xlog:safepoint,gc:{jvm_log}",
               *(LIGHT_JVM if self.light else []),
               "kafka.Kafka", str(self.server_properties)]  # fmt: skip
        logger.debug("starting %s", cmd)
        with self.log_file.open("ab") as out:
            # A new session: Ctrl-C in the terminal that ran `streamer kafka up`, or the end
            # of that process, must not reach the broker.
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.home, start_new_session=True,
            )  # fmt: skip
        self._pid_file.write_text(f"{proc.pid}\n")
        self._proc = proc
        return proc

    def _answers(self, admin: Any) -> bool:
        try:
            md = admin.list_topics(timeout=2.0)
        except KafkaException:
            return False
        return bool(md.brokers)

    def _wait_ready(self, pid: int, progress: Progress, timeout: float, started_now: bool) -> None:
        start = time.monotonic()
        next_report = start + _REPORT_EVERY
        admin: Any = None
        while True:
            if not self._alive(pid):
                raise LocalKafkaError(
                    f"Kafka exited while starting (pid {pid}); see {self.log_file}, which ends "
                    f"with:\n{self.tail(15)}"
                )
            # A TCP connect first: the admin client is only created once the port listens,
            # which keeps librdkafka's reconnect machinery out of the common start-up path.
            if admin is None and not port_is_free(self.port):
                admin = AdminClient(
                    {
                        "bootstrap.servers": self.bootstrap,
                        "socket.connection.setup.timeout.ms": 2000,
                        **self.client_config(ADMIN_USER),
                    },
                    logger=_ProbeLog(),
                )
            if admin is not None and self._answers(admin):
                return
            now = time.monotonic()
            if now - start >= timeout:
                what = "started" if started_now else "running"
                raise LocalKafkaError(
                    f"Kafka (pid {pid}) {what} but did not answer on {self.bootstrap} within "
                    f"{timeout:.0f}s; see {self.log_file}, which ends with:\n{self.tail(15)}"
                )
            if now >= next_report:
                progress(f"waiting for broker on {self.bootstrap} ... {now - start:.0f}s")
                next_report += _REPORT_EVERY
            time.sleep(0.2)

    def _stop_pid(self, pid: int, timeout: float) -> None:
        logger.debug("stopping Kafka pid %d (%s)", pid, self.home)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._alive(pid):
                    return
                time.sleep(0.1)
            if sig == signal.SIGTERM:
                logger.warning("Kafka pid %d ignored SIGTERM for %.0fs; killing it", pid, wait)
        raise LocalKafkaError(f"Kafka (pid {pid}) did not exit even after SIGKILL")
