"""streamer's benchmark suite: every scenario next to a raw confluent-kafka loop doing the
same work, measured in the same invocation.

Run: ``python -m bench --scenario all --messages 1000000 [--brokers HOST:PORT] [--json PATH]``;
``--peers`` adds Quix Streams and faust-streaming (:mod:`bench.peers`).
Entry point for code and tests: :func:`bench.runner.run_bench`.
"""
