"""Load an App from a ``module[:attribute]`` path, with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from streamer.errors import AppLoadError

if TYPE_CHECKING:
    from streamer.app import App


def load_app(path: str) -> App:
    """Import ``module[:attribute]`` and return the App it names.

    Without an attribute, the module's ``app`` is taken, or its only App instance. The
    current directory is put on ``sys.path`` first, as ``python -m`` would.
    """
    from streamer.app import App

    module_name, _, attribute = path.partition(":")
    if not module_name:
        raise AppLoadError(f"app path {path!r} is empty; use module or module:attribute")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing *target* module is the user's path error; a missing import inside
        # their module is a different mistake and keeps its own message.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"no module named {module_name!r} (from app path {path!r}); check the spelling "
                f"and that it is importable from {cwd}"
            ) from None
        raise AppLoadError(f"importing {module_name!r} failed: {exc}") from exc
    if attribute:
        if not hasattr(module, attribute):
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        candidate = getattr(module, attribute)
    elif isinstance(getattr(module, "app", None), App):
        candidate = module.app
    else:
        apps = [value for value in vars(module).values() if isinstance(value, App)]
        if len(apps) != 1:
            found = "no App" if not apps else f"{len(apps)} Apps"
            raise AppLoadError(
                f"module {module_name!r} has {found}; name one as {module_name}:attribute"
            )
        candidate = apps[0]
    if not isinstance(candidate, App):
        raise AppLoadError(f"{path!r} is a {type(candidate).__name__}, not a streamer.App")
    return candidate
