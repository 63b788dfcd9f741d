"""The report: the machine, a plain-text table, and the JSON file."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import confluent_kafka
import psutil  # type: ignore[import-untyped,unused-ignore]

import streamer
from bench.common import Result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "streamer": streamer.__version__,
        "confluent_kafka": str(confluent_kafka.version()),  # a str, unlike libversion()
        "librdkafka": confluent_kafka.libversion()[0],
    }


def sources_digest() -> str:
    """sha256 (12 hex) over streamer's ``*.py`` files: which code a run measured. Each
    scenario's child imports streamer afresh, so a digest that changed during a run means
    the run mixed versions."""
    root = Path(streamer.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def notes(result: Result) -> str:
    """The one-line remark of a row: goal ratios, RSS curve, or why it did not run."""
    extra = result.extra
    if result.status != "ok":
        return (result.reason or "").splitlines()[0][:140] if result.reason else ""
    said = []
    if result.scenario == "io_conc8" and "speedup_vs_conc1" in extra:
        said.append(f"{extra['speedup_vs_conc1']:.2f}x io_conc1")
    if result.scenario == "processes" and extra.get("scale_factor") is not None:
        said.append(
            f"{extra['scale_factor']:.2f}x one process ({extra['rate_1_process']:,.0f}/s); "
            f"broker CPU {extra['broker_cpu_s_1_process']}/{extra['broker_cpu_s_2_processes']} s"
        )
    if result.scenario.endswith(("count_eos", "count_emit_eos")) and "vs_count_alo" in extra:
        said.append(f"{extra['vs_count_alo']:.0%} of its at-least-once run")
    if "main_thread_busy" in extra and result.scenario not in ("latency", "backlog_rss"):
        said.append(f"main thread {extra['main_thread_busy']:.0%} busy")
    if extra.get("consumer_config_not_applied"):  # a peer without librdkafka's options
        said.append(f"not applied: {', '.join(extra['consumer_config_not_applied'])}")
    if said:
        return "; ".join(said)
    if result.scenario == "recovery":
        return "changelog records/s restored"
    if result.scenario == "latency":
        return (
            f"msg/s = the offered load; raw loop p50/p99 "
            f"{_num(extra.get('raw_p50_ms'), 1)}/{_num(extra.get('raw_p99_ms'), 1)} ms; "
            f"exactly-once (read_committed) "
            f"{_num(extra.get('eos_p50_ms'), 1)}/{_num(extra.get('eos_p99_ms'), 1)} ms"
        )
    if result.scenario == "backlog_rss":
        return (
            f"RSS start/median/peak/end {extra['rss_start_mb']:.0f}/"
            f"{extra['rss_median_mb']:.0f}/{extra['rss_peak_mb']:.0f}/"
            f"{extra['rss_end_mb']:.0f} MB over {result.seconds:.0f}s, "
            f"backlog {extra.get('backlog_mb', 0):,.0f} MB"
        )
    return ""


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


HEADER = (
    "scenario",
    "status",
    "messages",
    "msg/s",
    "x raw",
    "CPU us/msg",
    "p50 ms",
    "p99 ms",
    "peak RSS MB",
)


def rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    return [
        (
            r.scenario,
            r.status,
            _num(r.messages) if r.status == "ok" else "-",
            _num(r.rate) if r.status == "ok" else "-",
            _ratio(r.ratio),
            _num(r.extra.get("cpu_us_per_msg") if r.scenario != "latency" else None, 1),
            _num(r.p50_ms, 1),
            _num(r.p99_ms, 1),
            _num(r.peak_rss_mb, 0),
            notes(r),
        )
        for r in results
    ]


def table(results: Sequence[Result]) -> str:
    """A plain-text table; numbers right-aligned, notes last."""
    body = rows(results)
    head = (*HEADER, "notes")
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        return "  ".join([*cells, row[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths) + "  -----"
    return "\n".join([line(head), rule, *(line(row) for row in body)])


def markdown(results: Sequence[Result]) -> str:
    """The same table in Markdown (for the README)."""
    head = (*HEADER, "notes")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(out)


def write_json(path: Path, meta: dict[str, Any], results: Sequence[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "results": [r.as_dict() for r in results]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def load(path: Path) -> tuple[dict[str, Any], list[Result]]:
    """Read a results file written by :func:`write_json`."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return document["meta"], [Result(**row) for row in document["results"]]


if __name__ == "__main__":  # python -m bench.report results.json: the Markdown table
    import sys

    _meta, _results = load(Path(sys.argv[1]))
    print(markdown(_results))
