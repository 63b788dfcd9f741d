"""Runs one scenario's timed work in a fresh child process (``spawn``).

Each scenario gets a process of its own, so its peak RSS is its own (a Python process never
gives memory back, and librdkafka's threads make ``fork`` unsafe). The parent sets topics up
and pre-produces before it starts the child; the child builds the consumer (a raw loop or a
streamer worker), does the work, samples its own RSS with psutil and sends back a dict.

Messages on the pipe: ``("ready", None)`` once the child owns its partitions (the latency
scenario starts producing then), then ``("result", dict)`` or ``("error", dict)``.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.common import RssSampler


@dataclass(frozen=True)
class Job:
    """What a child runs: ``work`` names a function of :data:`bench.work.WORK`."""

    work: str
    brokers: str
    params: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None  # write a pyinstrument profile of the work to this path


@dataclass
class Ctx:
    """Handed to the work function inside the child."""

    sampler: RssSampler
    ready: Callable[[], None]


class ChildError(RuntimeError):
    """The work raised in the child; ``kind`` is the exception's class name."""

    def __init__(self, kind: str, message: str, trace: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.trace = trace


def run_job(
    job: Job, *, timeout: float, on_ready: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run ``job`` in a child process and return its result dict; raise ChildError if the
    work raised, RuntimeError if the child died or ran past ``timeout`` seconds (it is
    killed then)."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_main, args=(job, sender), name=f"bench-{job.work}", daemon=True)
    proc.start()
    sender.close()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if receiver.poll(0.1):
                try:
                    kind, body = receiver.recv()
                except EOFError:
                    raise RuntimeError(
                        f"bench child for {job.work!r} exited (code {proc.exitcode}) "
                        "without a result"
                    ) from None
                if kind == "ready":
                    if on_ready is not None:
                        on_ready()
                    continue
                if kind == "error":
                    raise ChildError(body["kind"], body["message"], body["trace"])
                result: dict[str, Any] = body
                return result
            if not proc.is_alive() and not receiver.poll(0):
                raise RuntimeError(
                    f"bench child for {job.work!r} exited (code {proc.exitcode}) without a result"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench child for {job.work!r} ran past {timeout:.0f}s")
    finally:
        receiver.close()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


def _main(job: Job, conn: Connection) -> None:
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"[{job.work}] %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    sampler = RssSampler().start()
    sent_ready = False

    def ready() -> None:
        nonlocal sent_ready
        if not sent_ready:
            sent_ready = True
            conn.send(("ready", None))

    try:
        from bench.work import WORK

        work = WORK[job.work]
        ctx = Ctx(sampler, ready)
        if job.profile:
            from bench.profile import profiled

            result = profiled(job.profile, lambda: work(job, ctx))
        else:
            result = work(job, ctx)
        sampler.stop()
        result.setdefault("peak_rss_mb", round(sampler.peak_mb, 1))
        conn.send(("result", result))
    except BaseException as exc:
        conn.send(
            (
                "error",
                {"kind": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()},
            )
        )
    finally:
        conn.close()
