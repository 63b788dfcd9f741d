"""The README demo: run apps.wordcount with `streamer worker` on the local broker, feed it
lines, print the word counts it produced, and stop the worker.

    python -m apps.demo [--brokers 127.0.0.1:9092]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, Producer

LINES = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks and the fox runs",
    "streams of events, processed in order",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", default=os.environ.get("STREAMER_BROKERS", "127.0.0.1:9092"))
    args = parser.parse_args()
    prefix = f"demo-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "STREAMER_BROKERS": args.brokers, "STREAMER_DEMO_PREFIX": prefix}
    print(f"starting `streamer worker apps.wordcount` on {args.brokers} (topics {prefix}-*)")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamer", "worker", "apps.wordcount"], env=env
    )
    try:
        _wait_for_topic(args.brokers, f"{prefix}-lines")
        producer = Producer({"bootstrap.servers": args.brokers})
        for number, line in enumerate(LINES):
            producer.produce(f"{prefix}-lines", line.encode(), f"line-{number}".encode())
        producer.flush(30)
        expected = sum(len(line.split()) for line in LINES)
        counts = _read_counts(args.brokers, f"{prefix}-words", expected)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    print("\nword counts produced by the agent:")
    for word, count in counts.most_common():
        print(f"  {word:<10} {count}")
    total = sum(counts.values())
    print(f"\n{total} words from {len(LINES)} lines; expected {expected}")
    return 0 if total == expected else 1


def _wait_for_topic(brokers: str, topic: str, timeout: float = 60) -> None:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "demo-probe"})
    deadline = time.monotonic() + timeout
    try:
        while topic not in consumer.list_topics(timeout=5).topics:
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not create {topic} within {timeout}s")
            time.sleep(0.2)
    finally:
        consumer.close()


def _read_counts(brokers: str, topic: str, expected: int, timeout: float = 60) -> Counter[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"demo-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    try:
        while sum(counts.values()) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    counts[message.key().decode()] += int(message.value())
    finally:
        consumer.close()
    return counts


if __name__ == "__main__":
    sys.exit(main())
