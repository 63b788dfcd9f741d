"""streamer's public test kit.

``streamer.testing.pytest_plugin`` (loaded automatically through the ``pytest11`` entry point)
provides a real Kafka broker per test session (``kafka_bootstrap``) and factory fixtures
(``unique_name``, ``kafka_admin``, ``create_topic``).
"""
