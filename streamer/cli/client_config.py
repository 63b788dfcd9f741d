"""``--config KEY=VALUE`` and ``--command-config FILE``: Kafka client properties for any
command, as the Kafka CLI takes them, so every command works on a secured cluster.

They are merged over the app's ``kafka_config`` (file first, then each ``--config``), so
credentials can stay out of the app's code: ``streamer status APP --command-config
client.properties``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streamer.app import App
from streamer.cli.loader import load_app
from streamer.errors import ConfigError

_KEY = "streamer.kafka_config"
F = TypeVar("F", bound=Callable[..., Any])


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` (or ``key: value``) lines of a Java-style properties file; ``#`` and
    ``!`` start comments. ConfigError names the file and line when one cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --command-config {path}: {exc.strerror or exc}") from None
    config: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = _split(line)
        if not sep or not key:
            # Never quote the line: it may be a password whose key was forgotten.
            raise ConfigError(f"{path}:{number}: expected key=value (no separator found)")
        config[key] = value
    return config


def _split(line: str) -> tuple[str, str, str]:
    # As java.util.Properties: the key ends at the first '=', ':' or blank.
    cuts = [i for i in (line.find("="), line.find(":"), line.find(" "), line.find("\t")) if i >= 0]
    if not cuts:
        return line, "", ""
    cut = min(cuts)
    return line[:cut].strip(), line[cut], line[cut + 1 :].strip(" \t=:")


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b=2")`` -> ``{"a": "1", "b": "2"}``; ConfigError for a pair without '='."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            # Never quote it: it may be a password given without its key.
            raise ConfigError("--config expects KEY=VALUE (an argument has no '=')")
        config[key.strip()] = value
    return config


def client_options(command: F) -> F:
    """Add ``--config`` and ``--command-config`` to ``command``; :func:`load_cli_app` and
    :func:`with_client_config` apply them."""

    @click.option(
        "--config",
        "config_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="A Kafka client property (librdkafka name), over the app's kafka_config. Repeatable.",
    )
    @click.option(
        "--command-config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="A properties file of Kafka client settings (as kafka-*.sh --command-config).",
    )
    @functools.wraps(command)
    def wrapper(
        *args: Any, config_pairs: tuple[str, ...], command_config: Path | None, **kwargs: Any
    ) -> Any:
        extra = read_properties(command_config) if command_config else {}
        extra.update(parse_pairs(config_pairs))
        click.get_current_context().meta[_KEY] = extra
        return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def cli_kafka_config() -> dict[str, str]:
    """The properties given by ``--command-config`` and ``--config`` ({} if none)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(_KEY, {})) if ctx is not None else {}


def with_client_config(app: App) -> App:
    """``app`` with the command line's client properties merged over its kafka_config."""
    extra = cli_kafka_config()
    if extra:
        merged = {**app.settings.kafka_config, **extra}
        app.settings = app.settings.model_copy(update={"kafka_config": merged})
    return app


def load_cli_app(app_path: str) -> App:
    """:func:`streamer.cli.loader.load_app`, then :func:`with_client_config`."""
    return with_client_config(load_app(app_path))


__all__ = [
    "cli_kafka_config",
    "client_options",
    "load_cli_app",
    "parse_pairs",
    "read_properties",
    "with_client_config",
]
