"""The work functions a child process can run, by name (see :class:`bench.child.Job`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.apps import backlog, count, recovery, stateless
from bench.baseline import raw_loop
from bench.child import Ctx, Job

WorkFn = Callable[[Job, Ctx], dict[str, Any]]

WORK: dict[str, WorkFn] = {
    "raw": raw_loop,
    "stateless": stateless,
    "count": count,
    "recovery": recovery,
    "backlog": backlog,
}
