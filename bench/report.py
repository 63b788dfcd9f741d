"""The report: the machine, a plain-text table, the JSON file, and the README's section.

``python -m bench.report RESULTS.json`` prints the Markdown table of a results file;
``python -m bench.report RESULTS.json --update README.md`` rewrites the README's benchmark
section (between :data:`BEGIN` and :data:`END`) from it: the date, machine and versions the
JSON recorded, and the table. Nothing in that section is typed by hand.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import textwrap
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


BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
"""The markers around the README's benchmark section; ``--update`` rewrites what is between."""


def label(result: Result) -> str:
    """A row's name in the README: whose code ran it."""
    if "peer" in result.extra:
        return result.scenario  # "quixstreams stateless_json"
    if result.scenario == "baseline":
        return "raw confluent-kafka loop"
    return f"streamer {result.scenario}"


def readme_table(results: Sequence[Result]) -> str:
    """The README's table: fewer columns than :func:`markdown`, one row per result."""
    head = ("", "msg/s", "x raw", "CPU us/msg", "peak RSS MB", "notes")
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 4 + "---|"]
    for r in results:
        ok = r.status == "ok"
        remark = notes(r) if ok else f"{r.status}: {notes(r)}".rstrip(": ")
        cells = (
            label(r),
            _num(r.rate) if ok else "-",
            _ratio(r.ratio),
            _num(r.extra.get("cpu_us_per_msg"), 1),
            _num(r.peak_rss_mb, 0),
            remark.replace("|", "/"),
        )
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _versions(meta: dict[str, Any]) -> str:
    m = meta.get("machine", {})
    parts = [
        f"streamer {m.get('streamer', '?')} (sources `{meta.get('streamer_sources', '?')}`) "
        f"and the raw loop on confluent-kafka {m.get('confluent_kafka', '?')} / librdkafka "
        f"{m.get('librdkafka', '?')}"
    ]
    for name, peer in (meta.get("peers") or {}).items():
        versions = peer.get("versions") or {}
        if not versions:
            parts.append(f"{name}: {peer.get('reason') or 'no version recorded'}")
            continue
        client = peer.get("client", "")
        said = f"{name} {versions.get(name, '?')} on {client} {versions.get(client, '?')}"
        if "librdkafka" in versions:
            said += f" / librdkafka {versions['librdkafka']}"
        parts.append(said)
    return "; ".join(parts)


def readme_section(meta: dict[str, Any], results: Sequence[Result]) -> str:
    """The README's benchmark section, markers included, from a results file alone (the
    same JSON gives the same text)."""
    m = meta.get("machine", {})
    brokers = str(meta.get("brokers", ""))
    where = (
        "a single local broker on the same machine"
        if brokers.startswith(("127.", "localhost", "[::1]"))
        else f"the broker at {brokers}"
    )
    options = meta.get("consumer_config") or {}
    given = (
        ", ".join(f"`{k}={v}`" for k, v in options.items())
        if options
        else "none (each library's defaults)"
    )
    intro = (
        f"One run of `{meta.get('command') or 'python -m bench'}` on "
        f"{str(meta.get('started', '?'))[:10]}, {int(meta.get('messages', 0)):,} records per "
        f"scenario, {where}: {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('memory_gb', '?')} GiB RAM, {m.get('os', '?')}, Python {m.get('python', '?')}. "
        f"{_versions(meta)}. Consumer options given to all: {given}."
    )
    outro = (
        "msg/s runs from the first record processed to the last, x raw is over the raw loop's "
        "and CPU us/msg is the processing thread's; every library runs with its own defaults. "
        "What each row does and how to run it: [docs/benchmarks.md](docs/benchmarks.md)."
    )
    generated = "<!-- generated by python -m bench.report RESULTS.json --update README.md -->"
    wrap = functools.partial(
        textwrap.fill, width=100, break_long_words=False, break_on_hyphens=False
    )
    return "\n".join(
        [BEGIN, generated, "", wrap(intro), "", readme_table(results), "", wrap(outro), END]
    )


def update_section(text: str, section: str) -> str:
    """``text`` with everything from :data:`BEGIN` to :data:`END` (both included) replaced
    by ``section``; the rest is left as it was. ValueError without exactly one such pair."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"want exactly one {BEGIN} and one {END}")
    start, end = text.index(BEGIN), text.index(END)
    if end < start:
        raise ValueError(f"{END} comes before {BEGIN}")
    return text[:start] + section + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Render a results file of python -m bench as Markdown.",
    )
    parser.add_argument("results", type=Path, help="the JSON written by python -m bench --json")
    parser.add_argument(
        "--update",
        type=Path,
        default=None,
        metavar="README",
        help=f"rewrite the section between {BEGIN} and {END} of this file",
    )
    args = parser.parse_args(argv)
    meta, results = load(args.results)
    if args.update is None:
        print(markdown(results))
        return 0
    text = args.update.read_text(encoding="utf-8")
    try:
        updated = update_section(text, readme_section(meta, results))
    except ValueError as exc:
        parser.error(f"{args.update}: {exc}")
    args.update.write_text(updated, encoding="utf-8")
    print(f"{args.update}: benchmark section {'updated' if updated != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
