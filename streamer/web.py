"""The worker's HTTP endpoints: ``/metrics``, ``/health`` and ``/ready``.

The server runs in a daemon thread (``http.server``), not in the worker's loop: the pump
blocks the loop in ``consume()`` for up to 100 ms per idle turn, which would make every
request wait several such turns. What the thread reads is safe without locks: Prometheus
metrics are thread-safe, and readiness copies the worker's partition map in one C-level
step (see :meth:`WorkerMetrics.readiness`). Liveness still reflects the loop: ``/health``
fails when the pump has not turned for :data:`STALL_AFTER` seconds.

- ``GET /metrics``: Prometheus text format from the worker's own registry (404 when metrics
  are turned off);
- ``GET /health``: 200 while the worker's pump turns, 503 when it has stalled;
- ``GET /ready``: 200 when the worker owns partitions and all are restored and processing,
  else 503; the JSON body says which partitions are not ready and how far recovery got.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.errors import ConfigError

if TYPE_CHECKING:
    from streamer.metrics import WorkerMetrics

log = logging.getLogger("streamer.web")

# Longer than anything the pump may legitimately block for (a checkpoint's flush waits up to
# 30 s), so only a wedged loop (say, an agent doing blocking work) fails the probe.
STALL_AFTER = 60.0
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

Response = tuple[int, str, bytes]


def respond(metrics: WorkerMetrics, path: str) -> Response:
    """Status, content type and body of ``GET path`` (query strings ignored)."""
    path = path.split("?", 1)[0]
    if path == "/metrics":
        if not metrics.enabled:
            return 404, _TEXT, b"metrics are turned off (the metrics setting)\n"
        return 200, CONTENT_TYPE_LATEST, metrics.exposition()
    if path == "/health":
        stalled = metrics.stalled_for()
        if stalled > STALL_AFTER:
            body = {"status": "stalled", "seconds": round(stalled, 1)}
            return 503, _JSON, orjson.dumps(body) + b"\n"
        return 200, _JSON, b'{"status":"alive"}\n'
    if path == "/ready":
        ready, detail = metrics.readiness()
        return (200 if ready else 503), _JSON, orjson.dumps(detail) + b"\n"
    return 404, _TEXT, b"try /metrics, /health or /ready\n"


class WebServer:
    """Serves one worker's endpoints on ``port`` (0: any free port, see :attr:`port`) on
    every IPv4 interface unless ``host`` is given. :meth:`start` and :meth:`close` bracket
    it; the thread never outlives :meth:`close`."""

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "") -> None:
        self.metrics = metrics
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (differs from the one asked for when that was 0)."""
        if self._server is None:
            return self._address[1]
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen and serve in a daemon thread; ConfigError (one line) when the port cannot
        be bound."""
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def _answer(self, *, send_body: bool) -> None:
                status, content_type, body = respond(metrics, self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s: " + format, self.address_string(), *args)

        try:
            server = ThreadingHTTPServer(self._address, Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on port {self._address[1]}: {exc.strerror or exc}"
            ) from exc
        server.daemon_threads = True  # a slow client never holds up the worker's exit
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"streamer-web-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics, /health and /ready on port %d", self.port)

    async def close(self) -> None:
        """Stop serving (without blocking the loop while the thread winds down)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            thread.join(5)


async def start_web(metrics: WorkerMetrics, port: int | None) -> WebServer | None:
    """Start the endpoints on ``port``; None (and nothing started) when ``port`` is None."""
    if port is None:
        return None
    server = WebServer(metrics, port)
    server.start()
    return server


__all__ = ["STALL_AFTER", "WebServer", "respond", "start_web"]
