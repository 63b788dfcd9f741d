"""`streamer tables APP [get TABLE KEY]`: inspect an app's local table state.

Reads the RocksDB stores under ``state_dir/<app id>/<table>/<partition>`` on this machine,
opened read-only: that works while a worker holds them, and never changes them. A read-only
open sees the state as of that moment (what the worker had written, including its WAL).
Only the partitions stored locally are shown or searched; other workers keep the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from streamer.app import App
from streamer.cli.client_config import client_options, load_cli_app
from streamer.cli.render import render_table
from streamer.errors import ConfigError, SerializationError
from streamer.state.global_table import GlobalTable
from streamer.state.store import CHANGELOG_OFFSET, PartitionStore, global_table_path, table_path
from streamer.state.table import Table
from streamer.state.versioned import VersionedTable, as_of, unpack
from streamer.state.window_store import CLOSED_FLAG, META_KEY, split_key


@dataclass(frozen=True)
class PartitionInfo:
    """One local table partition. ``error`` is set (and the numbers are None) when the store
    could not be opened."""

    table: str
    partition: int
    path: Path
    keys: int | None
    disk_bytes: int
    changelog_offset: int | None
    error: str | None = None
    late_events: int | None = None  # windowed tables: stored with the window metadata
    stream_time: int | None = None  # windowed tables: ms


@click.command()
@click.argument("app_path", metavar="APP")
@click.argument("rest", nargs=-1, metavar="[get TABLE KEY]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@client_options
def tables(app_path: str, rest: tuple[str, ...], as_json: bool) -> None:
    """List APP's tables and local partitions, or print one value with `get TABLE KEY`.

    The listing shows, per local partition, the number of keys, the size on disk, the
    changelog offset stored with the last checkpoint and, for windowed tables, the late
    events dropped so far. `get` on a windowed table lists the key's stored windows (start,
    end, value, open or closed). Use `--` before a KEY starting with
    a dash.
    """
    if rest and (rest[0] != "get" or len(rest) != 3):
        raise click.UsageError(
            f"unexpected arguments {' '.join(rest)!r}; use `streamer tables APP` or "
            "`streamer tables APP get TABLE KEY`"
        )
    app = load_cli_app(app_path)
    if not app.tables and not app.global_tables:
        raise ConfigError(f"app {app.id!r} declares no tables")
    if rest:
        _get(app, rest[1], rest[2], as_json)
    else:
        _list(app, as_json)


def _table_dir(app: App, table: str) -> Path:
    if table in app.global_tables:
        return global_table_path(app.settings.state_dir, app.id, table)
    return table_path(app.settings.state_dir, app.id, table)


def _windowed(app: App, name: str) -> bool:
    table = app.tables.get(name)
    return table is not None and table.windowed is not None


def _changelog(app: App, name: str) -> str:
    """Where the table's content lives in Kafka: its changelog, or a global table's topic."""
    table = app.tables.get(name)
    return table.changelog if table is not None else f"{app.global_tables[name].topic} (global)"


def _partition_dirs(app: App, table: str) -> list[tuple[int, Path]]:
    """The local partition directories of ``table`` (named by partition number), sorted."""
    root = _table_dir(app, table)
    if not root.is_dir():
        return []
    found = [(int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)


def _disk_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except OSError:  # a file RocksDB removed while we walked (compaction)
                continue
    return total


def _open(path: Path) -> PartitionStore:
    """Open a partition read-only; ConfigError in one line when RocksDB refuses."""
    try:
        return PartitionStore(path, read_only=True)
    except Exception as exc:  # rocksdict raises plain Exception
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot open {path} read-only: {first}") from exc


def _inspect(table: str, partition: int, path: Path, windowed: bool = False) -> PartitionInfo:
    try:
        store = _open(path)
    except ConfigError as exc:
        return PartitionInfo(table, partition, path, None, _disk_bytes(path), None, str(exc))
    try:
        # An exact count: RocksDB's estimate-num-keys is off after deletes and before flushes.
        keys = sum(1 for _ in store.items())
        offset = store.meta_offset(CHANGELOG_OFFSET)
        meta = store.get(META_KEY) if windowed else None
    finally:
        store.close()
    late = stream = None
    if windowed:
        fields = orjson.loads(meta) if meta else {}
        late, stream = int(fields.get("late", 0)), fields.get("stream")
    return PartitionInfo(table, partition, path, keys, _disk_bytes(path), offset, None, late,
                         stream)  # fmt: skip


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable; keeps the type checker content


def _list(app: App, as_json: bool) -> None:
    infos = {
        name: [
            _inspect(name, p, path, _windowed(app, name)) for p, path in _partition_dirs(app, name)
        ]
        for name in sorted({*app.tables, *app.global_tables})
    }
    if as_json:
        records = [
            {
                "table": name,
                "changelog": _changelog(app, name),
                "partitions": [
                    {
                        "partition": i.partition,
                        "path": str(i.path),
                        "keys": i.keys,
                        "disk_bytes": i.disk_bytes,
                        "changelog_offset": i.changelog_offset,
                        "error": i.error,
                        **(
                            {"late_events": i.late_events, "stream_time": _seconds(i.stream_time)}
                            if _windowed(app, name)
                            else {}
                        ),
                    }
                    for i in parts
                ],
            }
            for name, parts in infos.items()
        ]
        click.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"app {app.id!r}, local state in {Path(app.settings.state_dir) / app.id}")
    rows: list[tuple[object, ...]] = []
    for name, parts in infos.items():
        if not parts:
            rows.append((name, None, None, None, None, None, "no local partitions"))
        for i in parts:
            note = i.error or ""
            rows.append((name, i.partition, i.keys, _human(i.disk_bytes), i.changelog_offset,
                         i.late_events, note))  # fmt: skip
    headers = ["table", "partition", "keys", "size", "changelog offset", "late events", ""]
    click.echo(render_table(headers, rows))


def _encode_key(table: Table[Any, Any] | GlobalTable, text: str) -> bytes:
    """KEY as the table stores it: text for str keys, int/float for numeric serdes, else JSON
    (falling back to the text itself when it is not JSON)."""
    serde = table.key_serde
    candidates: list[Any]
    if serde.name == "str":
        candidates = [text]
    elif serde.name == "bytes":
        candidates = [text.encode()]
    elif serde.name in ("int", "float"):
        try:
            candidates = [int(text) if serde.name == "int" else float(text)]
        except ValueError:
            raise ConfigError(f"table {table.name!r} has {serde.name} keys; got {text!r}") from None
    else:
        try:
            candidates = [orjson.loads(text), text]
        except orjson.JSONDecodeError:
            candidates = [text]
    errors = []
    for candidate in candidates:
        try:
            data = serde.serialize(candidate)
        except SerializationError as exc:
            errors.append(str(exc))
            continue
        if data is not None:
            return data
    reason = errors[0] if errors else "it encodes to nothing"
    raise ConfigError(f"key {text!r} does not fit table {table.name!r}'s key serde: {reason}")


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models print as their JSON
    return dump(mode="json") if callable(dump) else value


def _render_value(value: Any) -> str:
    """Text values as they are; everything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(_jsonable(value), default=str).decode()


def _seconds(millis: int | None) -> float | None:
    return None if millis is None or millis < 0 else millis / 1000


def _get(app: App, name: str, key: str, as_json: bool) -> None:
    table: Table[Any, Any] | GlobalTable | None = app.tables.get(name) or app.global_tables.get(
        name
    )
    if table is None:
        known = ", ".join(sorted({*app.tables, *app.global_tables}))
        raise ConfigError(f"app {app.id!r} has no table {name!r}; its tables: {known}")
    data = _encode_key(table, key)
    if isinstance(table, Table) and table.windowed is not None:
        _get_windows(app, table, key, data, as_json)
        return
    searched: list[int] = []
    for partition, path in _partition_dirs(app, name):
        store = _open(path)
        try:
            raw = store.get(data)
        finally:
            store.close()
        searched.append(partition)
        if isinstance(table, VersionedTable):  # its newest version (see state/versioned.py)
            raw = as_of(unpack(raw), None)
        if raw is None:
            continue
        try:
            value = table.value_serde.deserialize(raw)
        except SerializationError as exc:
            raise ConfigError(
                f"table {name!r}, key {key!r}: stored value unreadable: {exc}"
            ) from exc
        if as_json:
            record = {"table": name, "key": key, "partition": partition, "value": _jsonable(value)}
            click.echo(_render_value(record))
        else:
            click.echo(_render_value(value))
        return
    where = ", ".join(map(str, searched)) or f"none; no local state in {_table_dir(app, name)}"
    raise ConfigError(f"key {key!r} not found in table {name!r} (partitions searched: {where})")


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _get_windows(app: App, table: Table[Any, Any], key: str, data: bytes, as_json: bool) -> None:
    """Every stored window of one key of a windowed table: start, end, value, open/closed.
    Windows are stored by start, then key (time order for closing), so this scans the local
    partitions' stores: fine for an inspection command, never used by the worker."""
    windowed = table.windowed
    assert windowed is not None
    windows: list[dict[str, Any]] = []
    searched: list[int] = []
    for partition, path in _partition_dirs(app, table.name):
        store = _open(path)
        try:
            found = [
                (stored_key, value)
                for stored_key, value in store.items()
                if stored_key != META_KEY and len(stored_key) > 8 and stored_key[8:] == data
            ]
        finally:
            store.close()
        searched.append(partition)
        for stored_key, value in found:
            start, _ = split_key(stored_key)
            try:
                decoded = windowed.stored_value(value)
            except SerializationError as exc:
                raise ConfigError(
                    f"table {table.name!r}, key {key!r}: stored window unreadable: {exc}"
                ) from exc
            windows.append({
                "partition": partition,
                "start": start / 1000,
                "end": windowed.window_end(start, value) / 1000,
                "value": _jsonable(decoded),
                "closed": value[:1] == CLOSED_FLAG,
            })  # fmt: skip
    if not windows:
        where = (
            ", ".join(map(str, searched))
            or f"none; no local state in {_table_dir(app, table.name)}"
        )
        raise ConfigError(
            f"key {key!r} has no stored window in windowed table {table.name!r} (partitions "
            f"searched: {where}; closed windows are deleted after their retention)"
        )
    windows.sort(key=lambda w: w["start"])
    if as_json:
        record = {"table": table.name, "key": key, "windows": windows}
        click.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
        return
    rows = [
        (_iso(w["start"]), _iso(w["end"]), _render_value(w["value"]),
         "closed" if w["closed"] else "open", w["partition"])
        for w in windows
    ]  # fmt: skip
    click.echo(render_table(["start", "end", "value", "state", "partition"], rows))
