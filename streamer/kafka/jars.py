"""Where the local broker's jars and files come from: the user cache, Maven, or KAFKA_HOME.

Private helper of :mod:`streamer.kafka.local`.  Layout of the cache::

    $XDG_CACHE_HOME/streamer/kafka/<version>/     (default ~/.cache/streamer/kafka/<version>)
        libs/              the broker's runtime classpath, complete or absent (never partial)
        libs.lock          held while Maven resolves, so two processes do not both download
        broker-<port>/     one LocalKafka instance home per port (see local.py)

Completeness rule: ``libs/`` only ever appears through an atomic ``rename`` of a fully
resolved temporary directory, so an interrupted ``mvn`` run leaves a ``libs.tmp*`` directory
behind (cleaned up on the next attempt) and never a ``libs/`` that looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from filelock import FileLock

from streamer.errors import LocalKafkaError, ToolMissingError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/streamer/kafka`` (``~/.cache/streamer/kafka`` when unset)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "streamer" / "kafka"


def version_dir(version: str) -> Path:
    """The per-version cache directory holding ``libs/`` and the default instance homes."""
    return cache_root() / version


def resource_text(name: str) -> str:
    """The text of a file shipped in ``streamer/kafka/resources`` (pom.xml, log4j2 config)."""
    return (resources.files("streamer.kafka") / "resources" / name).read_text(encoding="utf-8")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body.

    ``filelock`` uses ``flock`` on POSIX (``msvcrt`` on Windows): the lock dies with the
    process, so a killed holder never leaves it stuck.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def kafka_home_libs(kafka_home: Path) -> Path:
    """``<kafka_home>/libs`` after checking it looks like an unpacked Kafka distribution."""
    libs = kafka_home / "libs"
    if not any(libs.glob("kafka_2.*.jar")):
        raise LocalKafkaError(
            f"KAFKA_HOME={kafka_home} is not an unpacked Apache Kafka distribution "
            f"(no {libs}/kafka_2.*.jar); unset KAFKA_HOME to let streamer fetch the jars"
        )
    return libs


def _complete(libs: Path, version: str) -> bool:
    # Cheap sanity check on top of the atomic rename: the broker jar itself must be there.
    return (libs / f"kafka_2.13-{version}.jar").is_file()


def cached_libs(version: str) -> Path | None:
    """The cached ``libs/`` for ``version`` if a complete one exists, else None."""
    libs = version_dir(version) / "libs"
    return libs if _complete(libs, version) else None


def resolve_libs(version: str, progress: Progress) -> Path:
    """Return a complete ``libs/`` directory for Kafka ``version``, running Maven if needed.

    Maven runs at most once per version and machine: later calls (from any process) find the
    cache.  Raises :class:`ToolMissingError` if Maven is needed but not installed, and
    :class:`LocalKafkaError` (with Maven's last output lines) if resolution fails.
    """
    found = cached_libs(version)
    if found is not None:
        return found
    vdir = version_dir(version)
    with file_lock(vdir / "libs.lock"):
        # Another process may have finished the download while we waited for the lock.
        found = cached_libs(version)
        if found is not None:
            return found
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ToolMissingError(
                f"Maven is needed once to download Apache Kafka {version}'s jars: install it "
                "(apt-get install maven), or set KAFKA_HOME to an unpacked Kafka distribution"
            )
        for stale in vdir.glob("libs.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        progress(f"resolving Apache Kafka {version} jars with Maven (first run only)...")
        tmp = Path(tempfile.mkdtemp(prefix="libs.tmp", dir=vdir))
        try:
            pom = tmp / "pom.xml"
            pom.write_text(resource_text("pom.xml"), encoding="utf-8")
            out = tmp / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                f"-Dkafka.version={version}", f"-DoutputDirectory={out}",
                "-DincludeScope=runtime",
            ]  # fmt: skip
            logger.debug("running %s", cmd)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not _complete(out, version):
                lines = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                raise LocalKafkaError(
                    f"Maven could not resolve Apache Kafka {version} (exit {proc.returncode}); "
                    "check network access to Maven Central or set KAFKA_HOME. Maven said:\n"
                    + "\n".join(lines)
                )
            final = vdir / "libs"
            # Only reachable if someone put files there by hand: it failed _complete() above.
            shutil.rmtree(final, ignore_errors=True)
            os.rename(out, final)  # atomic: `libs/` is complete or absent
            jars = len(list(final.glob("*.jar")))
            logger.info("cached %d jars of Kafka %s in %s", jars, version, final)
            return final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
