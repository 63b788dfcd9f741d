"""SIGINT and SIGTERM for a worker that owns its process: seen even while the event loop is
blocked, and a stop that cannot outlast its bound.

asyncio's own signal handlers run on the event loop, so a loop thread blocked in a client
call (a commit waiting for a broker that is away, a consumer leaving its group) would sit on
a SIGTERM until that call returns. Here the signal's number is written by Python's C-level
handler to a socket (``signal.set_wakeup_fd``) that a thread of its own reads, whatever
the loop thread is doing:

- the first SIGINT or SIGTERM asks the worker to stop (on its loop) and arms a deadline:
  ``shutdown_timeout`` + :data:`STOP_GRACE`. A stop still running then (a client call
  that never returns) is cut short: one line on stderr saying so, exit status 1. Nothing
  is lost by it: whatever the stop had not committed is processed again by the next owner.
- the same signal a second time exits at once, with status 1, committing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("streamer.worker")

# Seconds a stop may run past shutdown_timeout (the final commit, leaving the group, closing
# tables and the producer) before the process exits without finishing it. The supervisor of
# --processes waits longer than this before it kills a child (ops.processes.STOP_GRACE).
STOP_GRACE = 45.0

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_now(why: str) -> None:
    """Exit the process at once with status 1 and one line on stderr: ``why``."""
    log.error("%s", why)
    try:
        sys.stderr.write(f"error: {why}\n")
        sys.stderr.flush()
    finally:
        logging.shutdown()
        os._exit(1)


class StopSignals:
    """While installed (:meth:`install` .. :meth:`remove`, on the main thread): the first
    SIGINT/SIGTERM calls ``stop(signum)`` on ``loop`` and arms the deadline of
    ``stop_within`` seconds; a second one of the same kind exits at once."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[int], None], stop_within: float
    ) -> None:
        self._loop = loop
        self._stop = stop
        self._stop_within = stop_within
        self._seen: set[int] = set()
        self._deadline: threading.Timer | None = None
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = -1
        self._previous_handlers: dict[int, object] = {}
        self._thread = threading.Thread(target=self._watch, name="streamer-signals", daemon=True)

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            # The Python-level handler does nothing: the C-level one has already written the
            # number to the wakeup socket, which the watching thread reads.
            self._previous_handlers[sig] = signal.signal(sig, lambda *_: None)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread.start()

    def remove(self) -> None:
        """Restore what was there before; an armed deadline stays armed (the stop goes on)."""
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._writer.close()  # the watching thread reads EOF and ends

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._arrived(signum)

    def _arrived(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in self._seen:
            _exit_now(f"{name} again: exiting at once, without committing")
        self._seen.add(signum)
        log.info("%s received: stopping (send it again to exit at once)", name)
        if self._deadline is None:
            self._deadline = threading.Timer(
                self._stop_within,
                _exit_now,
                (
                    f"the stop did not finish within {self._stop_within:g}s "
                    "(shutdown_timeout + a grace for the final commit and closing): exiting "
                    "without finishing it; whatever it had not committed is processed again by "
                    "the next owner",
                ),
            )
            self._deadline.daemon = True
            self._deadline.start()
        # A closed loop (RuntimeError): the worker has stopped already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop, signum)
