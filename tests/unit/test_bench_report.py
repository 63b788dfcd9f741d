"""The README's benchmark section is generated from a run's JSON (issue 20, item 5): the same
JSON renders the same text, and ``python -m bench.report RESULTS.json --update README.md``
rewrites only what lies between the markers. No broker, no run: a small results file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import Result
from bench.report import BEGIN, END, load, main, readme_section, update_section, write_json
from bench.runner import Report, add_ratios

ROOT = Path(__file__).resolve().parents[2]

META = {
    "started": "2026-12-02T09:30:00+00:00",
    "command": "python -m bench --peers --messages 1000 --json r.json",
    "messages": 1000,
    "consumer_config": {"fetch.queue.backoff.ms": "10"},
    "machine": {
        "nproc": 2,
        "memory_gb": 23.5,
        "cpu": "Test CPU",
        "os": "Linux 6.18",
        "python": "3.11.7",
        "streamer": "0.1.0",
        "confluent_kafka": "2.16.1",
        "librdkafka": "2.16.0",
    },
    "streamer_sources": "abcdef123456",
    "brokers": "127.0.0.1:9292",
    "peers": {
        "quixstreams": {
            "client": "confluent-kafka",
            "status": "ready",
            "versions": {
                "quixstreams": "3.28.1",
                "confluent-kafka": "2.12.2",
                "librdkafka": "2.12.1",
            },
        },
        "faust-streaming": {
            "client": "aiokafka",
            "status": "unavailable",
            "reason": "could not install faust-streaming-0.15.3: no network",
        },
    },
}


def _results() -> list[Result]:
    peer = {"peer": "quixstreams", "peer_version": "3.28.1"}
    results = [
        Result("baseline", "raw", messages=1000, rate=400_000.0, extra={"cpu_us_per_msg": 2.3}),
        Result("count_alo", "count", messages=1000, rate=200_000.0, peak_rss_mb=130.0),
        Result("count_eos", "count eos", messages=1000, rate=100_000.0),
        Result("quixstreams count_alo", "q", messages=1000, rate=80_000.0, extra=dict(peer)),
        Result("quixstreams count_eos", "q", messages=1000, rate=20_000.0, extra=dict(peer)),
        Result(
            "faust-streaming count_alo",
            "f",
            status="unavailable",
            reason="could not install faust-streaming-0.15.3: no network",
            extra={"peer": "faust-streaming"},
        ),
        Result(
            "faust-streaming count_eos",
            "f",
            status="failed",
            reason="RuntimeError: the worker stopped\ntraceback ...",
            extra={"peer": "faust-streaming"},
        ),
    ]
    add_ratios(results)
    return results


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    write_json(path, META, _results())
    return path


def test_section_is_rendered_from_the_json_alone(results_file: Path) -> None:
    meta, results = load(results_file)
    section = readme_section(meta, results)

    assert section == readme_section(*load(results_file)), "the same JSON, the same text"
    assert section.startswith(BEGIN + "\n") and section.endswith("\n" + END)
    flat = " ".join(section.split())
    for fact in (
        "on 2026-12-02",
        "1,000 records per scenario",
        "2 CPUs (Test CPU), 23.5 GiB RAM, Linux 6.18, Python 3.11.7",
        "streamer 0.1.0 (sources `abcdef123456`)",
        "confluent-kafka 2.16.1 / librdkafka 2.16.0",
        "quixstreams 3.28.1 on confluent-kafka 2.12.2 / librdkafka 2.12.1",
        "faust-streaming: could not install faust-streaming-0.15.3: no network",
        "`fetch.queue.backoff.ms=10`",
        "a single local broker",
    ):
        assert fact in flat, fact
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| raw confluent-kafka loop",
        "| streamer count_alo",
        "| streamer count_eos",
        "| quixstreams count_alo",
        "| quixstreams count_eos",
        "| faust-streaming count_alo",
        "| faust-streaming count_eos",
    ]
    assert "| quixstreams count_eos | 20,000 | 0.05 |" in section
    assert "25% of its at-least-once run" in section  # a peer's pair, like streamer's (50%)
    assert "50% of its at-least-once run" in section
    assert "unavailable: could not install" in section
    assert "failed: RuntimeError: the worker stopped |" in section  # one line of the reason
    assert "traceback" not in section


def test_update_replaces_only_the_marked_section(results_file: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before = "# project\n\nText before.\n\n"
    after = "\n\n## Next\n\nText after, with <!-- other --> comments.\n"
    readme.write_text(before + f"{BEGIN}\nold table\n{END}" + after)

    assert main([str(results_file), "--update", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after)
    assert "old table" not in text
    assert text[len(before) : len(text) - len(after)] == readme_section(*load(results_file))

    assert main([str(results_file), "--update", str(readme)]) == 0
    assert readme.read_text() == text, "a second update changes nothing"


@pytest.mark.parametrize(
    "text",
    ["no markers at all", f"{END}\n{BEGIN}", f"{BEGIN}\n{END}\n{BEGIN}\n{END}", f"{BEGIN} only"],
)
def test_update_refuses_text_without_one_marked_section(text: str) -> None:
    with pytest.raises(ValueError):
        update_section(text, f"{BEGIN}\nnew\n{END}")


def test_the_readme_has_one_marked_section() -> None:
    text = (ROOT / "README.md").read_text()
    assert update_section(text, f"{BEGIN}\nx\n{END}").count(BEGIN) == 1


def test_a_failing_peer_does_not_fail_the_run() -> None:
    report = Report(meta={}, results=_results())
    assert report.failed == []
    report.results.append(Result("count_alo", "count", status="failed", reason="broken"))
    assert [r.scenario for r in report.failed] == ["count_alo"]
