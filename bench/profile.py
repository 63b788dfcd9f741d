"""Optional profiling of a child's work with pyinstrument (not a dependency of streamer:
``pip install pyinstrument`` to use ``python -m bench --profile PATH``).

Writes ``PATH`` (HTML), ``PATH.txt`` (the call tree) and ``PATH.top.txt``: the functions
with the most *self* time and the most *inclusive* time, as shares of the profiled time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOP = 30


def profiled(path: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` under pyinstrument (the whole main thread, awaits included) and write the
    reports next to ``path``."""
    from pyinstrument import Profiler

    # async_mode="disabled": sample the thread as it is, event loop and all, instead of
    # attributing awaits to the coroutine that waits.
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        result = fn()
    finally:
        profiler.stop()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profiler.output_html(), encoding="utf-8")
    Path(f"{out}.txt").write_text(profiler.output_text(unicode=True), encoding="utf-8")
    session = profiler.last_session
    if session is not None:
        summary = flat_summary(session.root_frame())
        Path(f"{out}.top.txt").write_text(summary, encoding="utf-8")
    return result


def flat_summary(root: Any) -> str:
    """Self and inclusive time per function (recursion counted once), top :data:`TOP`."""
    total = root.time or 1e-9
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)

    def walk(frame: Any, stack: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        name = f"{frame.function}  ({frame.file_path_short}:{frame.line_no})"
        own[name] += frame.total_self_time
        if name not in stack:
            inclusive[name] += frame.time
        for child in frame.children:
            walk(child, stack | {name})

    walk(root, frozenset())
    lines = [f"profiled {total:.2f}s of the main thread", "", "self time:"]
    for name, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:TOP]:
        lines.append(f"  {seconds / total:6.1%}  {seconds:7.2f}s  {name}")
    lines += ["", "inclusive time:"]
    for name, seconds in sorted(inclusive.items(), key=lambda kv: -kv[1])[:TOP]:
        lines.append(f"  {seconds / total:6.1%}  {seconds:7.2f}s  {name}")
    return "\n".join(lines) + "\n"
