"""Load an App from ``module[:attribute]`` or ``path/to/file.py[:attribute]``, with errors that
say what to fix.

A file path is turned into the dotted module name Python itself would use: the file's
directory, and each parent directory holding an ``__init__.py``, make the package path
(``apps/orders.py`` inside the package ``apps`` is ``apps.orders``), and the first directory
that is not a package goes on ``sys.path``. Relative imports inside the app therefore work as
they do under ``python -m``, and the app is never imported twice under two names.

An exception raised while the user's module runs (a ``SyntaxError``, a missing import, a
``NameError`` ...) becomes one :class:`AppLoadError` line naming the user's ``file:line`` and
the error; the original exception is chained (``--debug`` shows its traceback). A
:class:`StreamerError` the module raises (invalid settings in its ``App(...)``, say) passes
through unchanged: its message already says what to fix.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.app import App
from streamer.errors import AppLoadError, StreamerError

if TYPE_CHECKING:
    from types import ModuleType

_STREAMER_DIR = str(Path(__file__).resolve().parent.parent)
# Frames in these directories are not the user's code (the interpreter's, installed packages').
_LIBRARY_DIRS = tuple(
    {str(Path(p).resolve()) for key in ("stdlib", "platstdlib", "purelib", "platlib")
     if (p := sysconfig.get_paths().get(key))}
)  # fmt: skip


def load_app(path: str) -> App:
    """Import ``module[:attribute]`` (or ``file.py[:attribute]``) and return the App it names.

    Without an attribute, the module's ``app`` is taken, or its only App instance. For a
    module path the current directory is put on ``sys.path`` first, as ``python -m`` would.
    Raises AppLoadError (one line) for every mistake in the path or inside the module.
    """
    target, _, attribute = _split(path)
    if not target:
        raise AppLoadError(
            f"app path {path!r} is empty; use module, module:attribute or path/to/app.py"
        )
    if _looks_like_file(target):
        module_name = _module_for_file(target, path)
    else:
        module_name = target
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    module = _import(module_name, path)
    if attribute:
        if not hasattr(module, attribute):
            apps = _apps_in(module, App)
            hint = f"; its Apps: {', '.join(apps)}" if apps else ""
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}{hint}")
        candidate = getattr(module, attribute)
    elif isinstance(getattr(module, "app", None), App):
        candidate = module.app
    else:
        apps = _apps_in(module, App)
        if len(apps) != 1:
            found = "no App" if not apps else f"{len(apps)} Apps ({', '.join(apps)})"
            raise AppLoadError(
                f"module {module_name!r} has {found}; name one as {target}:attribute"
            )
        candidate = getattr(module, apps[0])
    if not isinstance(candidate, App):
        raise AppLoadError(f"{path!r} is a {type(candidate).__name__}, not a streamer.App")
    return candidate


def _split(path: str) -> tuple[str, str, str]:
    """``target:attribute``; a drive letter (``C:\\apps\\x.py``) is not an attribute."""
    if len(path) > 2 and path[1] == ":" and path[2] in "\\/":
        drive, rest = path[:2], path[2:]
        target, sep, attribute = rest.partition(":")
        return drive + target, sep, attribute
    return path.partition(":")


def _looks_like_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _apps_in(module: ModuleType, app_type: type) -> list[str]:
    return [name for name, value in vars(module).items() if isinstance(value, app_type)]


def _module_for_file(target: str, path: str) -> str:
    """Put the file's package root on ``sys.path``; return its dotted module name."""
    file = Path(target)
    if file.is_dir():
        raise AppLoadError(f"{target!r} is a directory; name the app's .py file in it")
    if not file.is_file():
        raise AppLoadError(f"no file {target!r} (from app path {path!r}); check the path")
    if file.suffix != ".py":
        raise AppLoadError(f"{target!r} is not a Python file (.py)")
    file = file.resolve()
    parts = [file.stem]
    root = file.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ".".join(parts)


def _import(module_name: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except StreamerError:
        raise  # its message already names the cause and the fix
    except ModuleNotFoundError as exc:
        # Only a missing *target* module is the user's path error; a missing import inside
        # their module is a mistake in that module, reported at its line.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"no module named {module_name!r} (from app path {path!r}); check the spelling "
                f"and that it is importable from {os.getcwd()} (or give the file's path)"
            ) from None
        raise AppLoadError(_in_module(exc, module_name, path)) from exc
    except SyntaxError as exc:
        where = _where(exc.filename or "?", exc.lineno)
        raise AppLoadError(
            f"{where}: SyntaxError: {exc.msg} (while loading app {path!r}; --debug shows "
            "the traceback)"
        ) from exc
    except Exception as exc:
        raise AppLoadError(_in_module(exc, module_name, path)) from exc


def _in_module(exc: BaseException, module_name: str, path: str) -> str:
    """``file:line: Type: message`` at the user's deepest frame of ``exc``'s traceback."""
    frame = _user_frame(exc)
    where = _where(frame.filename, frame.lineno) if frame is not None else module_name
    message = str(exc).splitlines()[0] if str(exc) else ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{where}: {detail} (while loading app {path!r}; --debug shows the traceback)"


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest frame that is neither the import machinery, streamer, nor a library."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        name = frame.filename
        if name.startswith("<"):
            continue
        resolved = str(Path(name).resolve())
        if resolved.startswith(_STREAMER_DIR + os.sep):
            continue
        if any(resolved.startswith(d + os.sep) for d in _LIBRARY_DIRS):
            continue
        return frame
    return None


def _where(filename: str, lineno: int | None) -> str:
    """``file:line``, the file relative to the current directory when it is below it."""
    try:
        shown = os.path.relpath(filename)
        if shown.startswith(".."):
            shown = filename
    except ValueError:  # another drive
        shown = filename
    return f"{shown}:{lineno}" if lineno else shown
