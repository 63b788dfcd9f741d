"""Local table state on this machine (``state_dir/<app id>/<table>/<partition>``, see
:func:`streamer.state.store.partition_path`): which exists, and deleting it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from streamer.state.store import table_path


def local_state_dirs(state_dir: str | Path, app_id: str, tables: list[str]) -> list[Path]:
    """The local state directories of ``tables`` of app ``app_id`` that exist here."""
    paths = [table_path(state_dir, app_id, name) for name in tables]
    return [path for path in paths if path.exists()]


def delete_local_state(
    state_dir: str | Path,
    app_id: str,
    tables: list[str],
    advance: Callable[[int, int | None], None] | None = None,
) -> list[Path]:
    """Delete the local state of ``tables`` of app ``app_id``; returns the paths deleted.
    ``advance(files_deleted, total_files)`` follows the deletion (RocksDB stores can hold
    many large files)."""
    deleted = local_state_dirs(state_dir, app_id, tables)
    files = [f for path in deleted for f in path.rglob("*") if not f.is_dir()]
    for done, file in enumerate(files, start=1):
        file.unlink(missing_ok=True)
        if advance is not None:
            advance(done, len(files))
    for path in deleted:
        shutil.rmtree(path)
    return deleted
