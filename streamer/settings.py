"""Settings: one pydantic model, filled from arguments and ``STREAMER_*`` environment variables.

Arguments given to :class:`streamer.App` win over the environment. Kafka client options
(``kafka_config``, ``consumer_config``, ``producer_config``) pass to librdkafka untouched, so
SASL/SSL and any tuning work as documented there; values whose names look secret are masked
in every log line and repr (see :func:`redact`).
"""

from __future__ import annotations

import difflib
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "STREAMER_"
# Variables with the prefix that are not settings: read by streamer's test kit, benchmarks and
# example apps. Any other unknown ``STREAMER_*`` name is most likely a misspelt setting.
NOT_SETTINGS = frozenset(
    {"STREAMER_TEST_BROKERS", "STREAMER_BENCH_BROKERS", "STREAMER_DEMO_PREFIX"}
)
_warned: set[str] = set()

# Substrings of option names whose values are credentials (librdkafka's and the Java
# client's spellings): sasl.password, ssl.key.password, ssl.keystore.password, ssl.key.pem,
# sasl.jaas.config, sasl.oauthbearer.client.secret, sasl.oauthbearer.config, ...
_SECRET_MARKERS = ("password", "secret", "sasl.oauthbearer.config", "ssl.key", "token",
                   "jaas", "credential", "private")  # fmt: skip
_CLIENT_CONFIGS = ("kafka_config", "consumer_config", "producer_config")


class ProcessingGuarantee(StrEnum):
    """What a crash may cost: duplicates (at-least-once) or nothing (exactly-once)."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Settings(BaseSettings):
    """Everything an App can be told. Field docs are the user documentation."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    brokers: str = Field("localhost:9092", description="Kafka bootstrap servers, comma separated.")
    processing_guarantee: ProcessingGuarantee = Field(
        ProcessingGuarantee.AT_LEAST_ONCE,
        description="at_least_once (a crash may repeat outputs) or exactly_once (Kafka "
        "transactions: outputs, table changes and offsets commit together).",
    )
    commit_interval: float | None = Field(
        None, gt=0, description="Seconds between checkpoints (1.0 at-least-once, 0.1 exactly-once)."
    )
    group_id: str | None = Field(None, description="Consumer group id; defaults to the app id.")
    instance_id: str | None = Field(
        None, description="Stable worker identity: static membership and transactional.id."
    )
    state_dir: Path = Field(Path("state"), description="Where tables keep their RocksDB stores.")
    schema_dir: Path = Field(
        Path("schemas"), description="Where Avro schemas (.avsc files) are found."
    )
    topic_auto_create: bool = Field(True, description="Create declared topics that are missing.")
    delayed_delivery: bool = Field(
        False,
        description="Give the app a delay topic (<app id>-delayed) so send(delay=...) works; "
        "its workers release each record when due.",
    )
    topic_replication: int = Field(1, ge=1, description="Replication factor for created topics.")
    lane_buffer: int = Field(
        1000,
        ge=1,
        description="Events buffered per partition before it is paused (at least two "
        "consume batches).",
    )
    consume_batch: int = Field(500, ge=1, description="Max records taken per consume call.")
    gc_threshold: int = Field(
        10_000,
        ge=0,
        description="While a worker runs, Python's garbage collector runs a young collection "
        "every this many allocations, with the objects that exist at start frozen (the "
        "interpreter's default, 700, costs up to half of the CPU per record; see "
        "streamer.worker.collector); 0 leaves the collector as it is.",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="Seconds to let in-flight events finish on stop."
    )
    connect_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to wait for a broker to answer before giving up with an error "
        "that names the address (the CLI's --timeout).",
    )
    event_order: bool = Field(
        True,
        description="In apps with windowed tables, hand out the records of partitions that "
        "feed one stream time lowest timestamp first (see docs/windows.md).",
    )
    event_order_wait: float = Field(
        0.5,
        description="Seconds stream time waits for a partition that has no record buffered "
        "and is not caught up before passing it (as Kafka Streams' max.task.idle.ms); "
        "negative: wait until it has records.",
    )
    standby_replicas: int = Field(
        0, ge=0, description="Keep warm copies of table partitions this worker does not own."
    )
    web_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve /metrics, /health and /ready on this port (see web_host); "
        "none: no HTTP server.",
    )
    web_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the web endpoints listen on: 127.0.0.1 (this machine only) "
        "unless told; 0.0.0.0 for every interface, as containers need.",
    )
    metrics: bool = Field(
        True, description="Collect Prometheus metrics (per-event counts, sampled latency)."
    )
    kafka_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka options for consumer and producer."
    )
    consumer_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka options for the consumer only."
    )
    producer_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka options for the producer only."
    )

    @field_validator("brokers")
    @classmethod
    def _brokers_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one host:port")
        return value.strip()

    def __repr_args__(self) -> Any:
        # repr(), str() and pydantic's own error texts show the settings: never a credential.
        for name, value in super().__repr_args__():
            yield name, redact(value) if name in _CLIENT_CONFIGS else value

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE

    @property
    def effective_commit_interval(self) -> float:
        if self.commit_interval is not None:
            return self.commit_interval
        return 0.1 if self.exactly_once else 1.0


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from ``overrides`` and the environment.

    Unknown ``STREAMER_*`` variables are logged as a warning naming the closest setting
    (:func:`check_environment`). Raises ConfigError naming each invalid field and its env
    variable: on the first line when one field is wrong, else one indented line per field.
    """
    check_environment()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            env = f"{ENV_PREFIX}{str(err['loc'][0]).upper()}" if err["loc"] else ""
            hint = f" (argument {field!r} or env {env})" if env else ""
            lines.append(f"{field}: {err['msg']}{hint}")
        if len(lines) == 1:
            raise ConfigError(f"invalid settings: {lines[0]}") from None
        body = "".join(f"\n  {line}" for line in lines)
        raise ConfigError(f"invalid settings ({len(lines)} fields):{body}") from None


def check_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Warn (once per name and process) about ``STREAMER_*`` variables that are no setting,
    with the closest valid name; return the warnings. Settings ignore such variables, so a
    typo like ``STREAMER_COMIT_INTERVAL`` would otherwise change nothing, silently."""
    env = os.environ if environ is None else environ
    valid = sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)
    warnings = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or upper in valid:
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"settings: {', '.join(valid)}"
        warnings.append(f"unknown setting {name} is ignored; {hint}")
        if name not in _warned:
            _warned.add(name)
            log.warning("%s", warnings[-1])
    return warnings


def reference_markdown() -> str:
    """The settings as a Markdown table (name, env variable, default, meaning): the
    configuration reference of the documentation is generated from this, so it cannot drift
    from the model."""
    rows = ["| setting | env variable | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if info.default_factory is not None:
            default = "`{}`"
        elif info.default is None:
            default = "none"
        else:
            value = info.default
            default = f"`{value.value if isinstance(value, StrEnum) else value}`"
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


def is_secret(key: str) -> bool:
    """True when the value of client option ``key`` is a credential (see ``redact``)."""
    return any(marker in key.lower() for marker in _SECRET_MARKERS)


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a librdkafka config safe to log: secret-looking values are masked."""
    return {key: "***" if is_secret(key) else value for key, value in config.items()}
