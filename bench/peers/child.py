"""The child side of a peer run: read the job, run one scenario's app, write what it measured.

``python -m bench.peers.<peer>_app PARAMS.json RESULT.json`` runs in the peer's virtualenv
with the repository root on ``PYTHONPATH``; this module and :mod:`bench.common` use nothing
but the standard library, so neither streamer nor its dependencies need to be there. The
result file holds ``{"result": {...}}`` or ``{"error": {"kind", "message", "trace"}}``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.common import Progress

App = Callable[[dict[str, Any]], dict[str, Any]]
"""One scenario of a peer: the job's params in, what it measured out."""


def measured(progress: Progress, **extra: Any) -> dict[str, Any]:
    """The same quantities streamer's scenarios report (see ``bench.apps``)."""
    return {
        "processed": progress.count,
        "seconds": progress.seconds,
        "rate": progress.rate,
        **progress.cpu(),
        **extra,
    }


def versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``distributions`` (those missing are left out)."""
    found: dict[str, str] = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(apps: dict[str, App], argv: list[str] | None = None) -> int:
    """Run ``apps[params["scenario"]]``; always write the result file, exit 1 on an error."""
    params_path, result_path = (sys.argv[1:] if argv is None else argv)[:2]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(result_path)
    try:
        params = json.loads(Path(params_path).read_text(encoding="utf-8"))
        Path(params["state_dir"]).mkdir(parents=True, exist_ok=True)
        result = apps[params["scenario"]](params)
    except BaseException as exc:  # a SystemExit of the library too: report, never hang
        error = {"kind": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()}
        out.write_text(json.dumps({"error": error}), encoding="utf-8")
        return 1
    out.write_text(json.dumps({"result": result}), encoding="utf-8")
    return 0
