"""SIGTERM always stops a worker that owns its process, even while its event loop is blocked
(a client call waiting for a broker that is away): a second SIGTERM exits at once, and a stop
that outlasts its bound exits by itself. Each case runs in a child process whose loop is
blocked on purpose."""

from __future__ import annotations

import signal
import subprocess
import sys

# A loop blocked for good in a synchronous call, with StopSignals installed; the stop
# callback, which could only run on the loop, would print STOPPED.
CHILD = """
import asyncio, logging, sys, threading
from streamer.worker.signals import StopSignals
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

async def main() -> None:
    signals = StopSignals(asyncio.get_running_loop(), lambda s: print("STOPPED", flush=True),
                          stop_within=float(sys.argv[1]))
    signals.install()
    print("READY", flush=True)
    threading.Event().wait()  # the loop thread blocked in a call that never returns

asyncio.run(main())
"""


def _child(stop_within: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(stop_within)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    return child


def _stderr_lines(child: subprocess.Popen[str]) -> list[str]:
    assert child.stderr is not None
    return child.stderr.read().splitlines()


def _wait_for_line(child: subprocess.Popen[str], text: str) -> None:
    """Read the child's stderr until a line holds ``text`` (or it ends: then fail)."""
    assert child.stderr is not None
    lines = [child.stderr.readline()]
    while text not in lines[-1] and lines[-1]:
        lines.append(child.stderr.readline())
    assert text in lines[-1], lines


def test_a_second_sigterm_exits_at_once_while_the_loop_is_blocked() -> None:
    child = _child(stop_within=600)
    child.send_signal(signal.SIGTERM)
    # The first one is seen (by the watching thread: the loop cannot run) before the second.
    _wait_for_line(child, "SIGTERM received")
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 1
    assert "error: SIGTERM again: exiting at once, without committing" in _stderr_lines(child)


def test_a_stop_that_outlasts_its_bound_exits_with_one_line_saying_why() -> None:
    child = _child(stop_within=0.5)
    child.send_signal(signal.SIGTERM)
    assert child.wait(120) == 1, "the stop ran on past its bound"
    errors = [line for line in _stderr_lines(child) if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: the stop did not finish within 0.5s"
    ), errors
