"""Several worker processes of one app on one machine: ``streamer worker APP --processes N``.

One Python process runs its event loop on one core. The supervisor here starts N worker
processes of the same app; they join the app's consumer group like workers on N machines
and share its partitions. Each child gets its own identity (:func:`child_settings`): the
instance id ``<instance>-<i>`` (static membership; the transactional.id under
exactly-once, so a restarted child fences its predecessor at once), the state directory
``<state_dir>/process-<i>`` (a partition moving between two processes never meets a RocksDB
lock held by the other) and, with a web port, the port ``<port> + i``.

Contract of :class:`Supervisor`:

- a child that exits while the supervisor is not stopping is restarted after a short
  backoff, with the same index (so the same identity); one that dies ``MAX_RESTARTS``
  times within ``RESTART_WINDOW`` seconds stops every child and the supervisor exits 1
  with one line (a crash loop, such as a bad app path, is not retried forever);
- SIGTERM or SIGINT to the supervisor is forwarded once to every child, which stops
  cleanly (in-flight events finish, offsets are committed); a second one is forwarded
  again (a worker asked twice exits at once). Children run in their own session, so a
  terminal's Ctrl-C reaches them only through the supervisor, once;
- the exit status is 0 when every child stopped cleanly, else the first non-zero status
  of a child (a signal's as 128 + its number);
- on Linux a child is sent SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``),
  so a ``kill -9`` of the supervisor leaves no worker behind for long.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from streamer.errors import ConfigError
from streamer.settings import Settings

log = logging.getLogger("streamer.processes")

MAX_RESTARTS = 5  # restarts of one child within RESTART_WINDOW before the supervisor gives up
RESTART_WINDOW = 60.0
POLL = 0.2  # seconds between looks at the children
# Seconds past the workers' shutdown_timeout before a child is killed: longer than the bound a
# worker puts on its own stop (streamer.worker.signals.STOP_GRACE, 45 s), so a stuck stop
# says why itself.
STOP_GRACE = 60.0


def parse_processes(value: str) -> int:
    """``"auto"`` (one per core) or a positive integer; ConfigError otherwise."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"--processes takes a positive number or 'auto', not {value!r}")
    return count


def child_settings(settings: Settings, index: int) -> Settings:
    """Child ``index``'s settings: its own instance id, state directory and web port."""
    update: dict[str, object] = {"state_dir": Path(settings.state_dir) / f"process-{index}"}
    if settings.instance_id:
        update["instance_id"] = f"{settings.instance_id}-{index}"
    if settings.web_port:  # 0 (any free port) stays 0
        update["web_port"] = settings.web_port + index
    return settings.model_copy(update=update)


def child_argv(argv: Sequence[str], index: int) -> list[str]:
    """The command line of child ``index``: this command's arguments (``argv`` without the
    program) with ``--processes`` removed and ``--process-index`` added."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        args.append(arg)
    return [sys.executable, "-m", "streamer", *args, "--process-index", str(index)]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned child keeps running until stopped


def _status(code: int) -> int:
    return 128 - code if code < 0 else code  # Popen reports a signal as its negative number


class Supervisor:
    """Starts ``count`` children (``command(i)`` is child i's argv) and keeps them running
    until a signal asks them to stop; see the module docstring for the contract."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], list[str]],
        *,
        stop_timeout: float,
        launch: Callable[[list[str]], subprocess.Popen[bytes]] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """``launch`` starts a child (tests give their own); ``handle_signals=False`` leaves
        SIGTERM/SIGINT alone (a supervisor run off the main thread, as in tests: call
        :meth:`signalled` instead)."""
        self.count = count
        self._handle_signals = handle_signals
        self.command = command
        self.stop_timeout = stop_timeout
        self._launch = launch or self._popen
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, list[float]] = {i: [] for i in range(count)}
        self.stopping = False
        self._signals = 0  # forwarded so far
        self._failure: str | None = None

    @staticmethod
    def _popen(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)

    def run(self) -> int:
        wanted = (signal.SIGTERM, signal.SIGINT) if self._handle_signals else ()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in wanted}
        try:
            for index in range(self.count):
                self._start(index)
            log.info("supervising %d worker processes; SIGTERM stops them all", self.count)
            while not self.stopping:
                self._watch()
                time.sleep(POLL)
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, index: int) -> None:
        child = self._launch(self.command(index))
        self.children[index] = child
        log.info("worker process %d started (pid %d)", index, child.pid)

    def _watch(self) -> None:
        """Restart children that died; give up on one that keeps dying."""
        for index, child in list(self.children.items()):
            code = child.poll()
            if code is None or self.stopping:
                continue
            now = time.monotonic()
            recent = [t for t in self.restarts[index] if now - t < RESTART_WINDOW]
            if len(recent) >= MAX_RESTARTS:
                self._failure = (
                    f"worker process {index} exited {len(recent) + 1} times within "
                    f"{RESTART_WINDOW:.0f}s (last status {_status(code)}); stopping all of "
                    "them (its log above says why)"
                )
                log.error("%s", self._failure)
                self.stopping = True
                self._forward(signal.SIGTERM)
                return
            recent.append(now)
            self.restarts[index] = recent
            log.warning(
                "worker process %d (pid %d) exited with status %d; restarting it",
                index, child.pid, _status(code),
            )  # fmt: skip
            time.sleep(min(0.5 * len(recent), 5.0))  # backoff: a crash loop does not spin
            if not self.stopping:
                self._start(index)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signalled(signal.Signals(signum))

    def signalled(self, sig: signal.Signals) -> None:
        """The supervisor was sent ``sig``: stop, and forward it to every child."""
        self.stopping = True
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        self._signals += 1
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    child.send_signal(sig)

    def _stop(self) -> int:
        """Wait for every child to stop (killing those that overstay); the exit status."""
        deadline = time.monotonic() + self.stop_timeout + STOP_GRACE
        statuses: dict[int, int] = {}
        for index, child in self.children.items():
            try:
                code = child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d (pid %d) did not stop in time; killed", index,
                          child.pid)  # fmt: skip
                child.kill()
                code = child.wait()
            statuses[index] = _status(code)
        failed = {i: code for i, code in statuses.items() if code != 0}
        if failed:
            listed = ", ".join(f"{i} (status {c})" for i, c in sorted(failed.items()))
            log.error("worker processes that did not stop cleanly: %s", listed)
        if self._failure is not None:
            return 1
        return next(iter(failed.values()), 0)


__all__ = ["Supervisor", "child_argv", "child_settings", "parse_processes"]
