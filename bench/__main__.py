"""``python -m bench --scenario all --messages 1000000 [--brokers HOST:PORT] [--json PATH]``

Without ``--brokers``: ``$STREAMER_BENCH_BROKERS``, else a local Kafka started on a free
port for the run (and stopped at its end). Exit status 1 when a scenario of streamer failed.

``python -m bench --peers ...``: baseline, stateless_json, count_alo and count_eos (unless
``--scenario`` says otherwise), each followed by the same scenario with Quix Streams and
faust-streaming, each in a virtualenv of its own (see :mod:`bench.peers`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.peers.run import SCENARIOS as PEER_SCENARIOS
from bench.peers.venvs import PEERS, default_cache
from bench.runner import run_bench
from bench.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="streamer benchmarks against the raw Kafka client"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help=f"'all' (default) or names, comma-separated or repeated: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="scale of every scenario (default 1e6)"
    )
    parser.add_argument("--brokers", default=None, help="HOST:PORT of the Kafka to use")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="PATH",
        help="profile the children with pyinstrument: stateless_json to PATH (.txt, .top.txt), "
        "the throughput scenarios to PATH-<scenario>",
    )
    parser.add_argument(
        "--consumer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka consumer option for the baseline and every app alike (repeatable)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help=f"also run {', '.join(PEER_SCENARIOS)} with "
        f"{' and '.join(p.slug for p in PEERS)}, each in its own virtualenv (made on first "
        "use; the default scenarios become those three and the baseline)",
    )
    parser.add_argument(
        "--peers-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where the peers' virtualenvs live (default: {default_cache()})",
    )
    parser.add_argument(
        "--peers-refresh",
        action="store_true",
        help="delete the peers' virtualenvs and make them anew",
    )
    args = parser.parse_args(argv)
    consumer_config = {}
    for item in args.consumer_config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--consumer-config wants KEY=VALUE, got {item!r}")
        consumer_config[key.strip()] = value.strip()
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    selection = args.scenario or (list(PEER_SCENARIOS) if args.peers else ["all"])
    try:
        report = run_bench(
            selection,
            args.messages,
            brokers=args.brokers,
            json_path=args.json,
            profile=args.profile,
            consumer_config=consumer_config,
            command=command,
            peers=args.peers,
            peers_cache=args.peers_cache,
            peers_refresh=args.peers_refresh,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
