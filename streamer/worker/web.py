"""The worker's HTTP endpoints: ``/metrics``, ``/health`` and ``/ready``.

The server runs its own asyncio loop in a daemon thread, not in the worker's loop: the pump
blocks the worker's loop in ``consume()`` for up to 100 ms per idle turn, which would make
every request wait several such turns. What the thread reads is safe without locks:
Prometheus metrics are thread-safe, and readiness copies the worker's partition map in one
C-level step (see :meth:`streamer.worker.readiness.Readiness.check`). Liveness still reflects
the worker's loop: ``/health`` fails when the pump has not turned for :data:`STALL_AFTER`
seconds.

- ``GET /metrics``: Prometheus text format from the worker's own registry (404 when metrics
  are turned off);
- ``GET /health``: 200 while the worker's pump turns, 503 when it has stalled;
- ``GET /ready``: 200 when the worker owns partitions and all are restored and processing,
  else 503; the JSON body says which partitions are not ready and how far recovery got.

Hostile clients are bounded, not trusted: each connection is a coroutine (no thread per
client), must deliver its request within :data:`REQUEST_TIMEOUT` seconds in at most
:data:`MAX_REQUEST_BYTES`, and is answered with ``Connection: close``; beyond
:data:`MAX_CONNECTIONS` open connections new ones are closed at once. So a slow or malformed
client cannot hold ``/metrics`` up for others, and an error while answering is a bare 500
(the traceback goes to the log, never into a response).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.errors import ConfigError

if TYPE_CHECKING:
    from streamer.worker.metrics import WorkerMetrics
    from streamer.worker.readiness import Readiness

log = logging.getLogger("streamer.web")  # the name it had at the top level: log filters keep

# Longer than anything the pump may legitimately block for (a checkpoint's flush waits up to
# 30 s), so only a wedged loop (say, an agent doing blocking work) fails the probe.
STALL_AFTER = 60.0
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request head (and to take the answer)."""
MAX_REQUEST_BYTES = 16384
"""Longest request head (request line and headers) accepted; longer ones get 431."""
MAX_CONNECTIONS = 512
"""Open connections served at once; more are closed unanswered (no thread per client)."""
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip

Response = tuple[int, str, bytes]


def respond(metrics: WorkerMetrics, readiness: Readiness, path: str) -> Response:
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
        ready, detail = readiness.check()
        return (200 if ready else 503), _JSON, orjson.dumps(detail) + b"\n"
    return 404, _TEXT, b"try /metrics, /health or /ready\n"


def _error(status: int, text: str) -> Response:
    return status, _TEXT, text.encode() + b"\n"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ConfigError (one line naming the cause and the
    fix) when it cannot be had, typically because another process already listens there."""
    try:
        return socket.create_server((host, port), backlog=128)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use by another process"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine"
        else:
            why = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot serve the web endpoints on {host}:{port}: {why}; choose another "
            "--web-port (STREAMER_WEB_PORT), 0 for any free port, or stop that process"
        ) from None
    except (UnicodeError, ValueError) as exc:  # e.g. a host name that is not one
        raise ConfigError(f"cannot serve the web endpoints on {host!r}: {exc}") from None


class WebServer:
    """Serves one worker's endpoints on ``host:port`` (port 0: any free port, see
    :attr:`port`; host: 127.0.0.1 unless told, ``0.0.0.0`` for every interface).

    :meth:`bind` takes the port (it may be called early, before anything else starts, so a
    taken port fails fast), :meth:`start` serves, :meth:`close` stops; the thread never
    outlives :meth:`close`.
    """

    def __init__(
        self,
        metrics: WorkerMetrics,
        readiness: Readiness,
        port: int | None,
        host: str = "127.0.0.1",
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self._enabled = port is not None  # None: no endpoints (every method does nothing)
        self._address = (host, port or 0)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open = 0
        self._start_error: Exception | None = None

    @property
    def port(self) -> int:
        """The port listened on (differs from the one asked for when that was 0)."""
        if self._sock is None:
            return self._address[1]
        return int(self._sock.getsockname()[1])

    def bind(self) -> None:
        """Take the port now (idempotent); ConfigError (one line) when it cannot be bound."""
        if self._sock is None and self._enabled:
            self._sock = bind(*self._address)

    def start(self) -> None:
        """Bind unless done, then serve in a daemon thread with its own event loop."""
        self.bind()
        if not self._enabled:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready), name=f"streamer-web-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if self._start_error is not None:
            raise ConfigError(
                f"cannot serve the web endpoints on {self._address[0]}:{self.port}: "
                f"{self._start_error}"
            )
        log.info("serving /metrics, /health and /ready on %s:%d", self._address[0], self.port)

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        sock = self._sock
        assert sock is not None
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._connection, sock=sock, limit=MAX_REQUEST_BYTES)
            )
        except Exception as exc:  # reported by start(), in the caller's thread
            self._start_error = exc
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1  # only this thread's loop touches it
        try:
            if self._open > MAX_CONNECTIONS:
                return  # closed unanswered: the cheapest answer to a flood
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response, head_only = await self._read_and_answer(reader)
                await self._write(writer, response, head_only)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a slow or vanished client: nothing to say, nothing to log
        except Exception:  # a bug while answering: the client gets a bare 500, the log the rest
            log.exception("web endpoint failed")
            with contextlib.suppress(Exception):
                await self._write(writer, _error(500, "internal error"), head_only=False)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _error(431, "request head too large"), False
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                raise  # opened and closed without a word
            head = exc.partial
        request_line = head.split(b"\r\n", 1)[0]
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _error(400, "malformed request"), False
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            return _error(405, "only GET and HEAD"), False
        path = target.decode("ascii", errors="replace")
        return respond(self.metrics, self.readiness, path), method == b"HEAD"

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        status, content_type, body = response
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(head if head_only else head + body)
        await writer.drain()

    async def close(self) -> None:
        """Stop serving (without blocking the caller's loop while the thread winds down)."""
        loop, thread, sock = self._loop, self._thread, self._sock
        self._loop = self._thread = self._sock = None
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):  # a loop that never started is closed
                loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, 5)
        if sock is not None:
            sock.close()


def bind_web(
    metrics: WorkerMetrics, readiness: Readiness, port: int | None, host: str
) -> WebServer:
    """The endpoints' server with ``host:port`` already bound (call :meth:`WebServer.start` to
    serve); with ``port`` None, one whose start and close do nothing. Called before any Kafka
    client exists, so a taken port ends the worker at once with one line (ConfigError) and
    nothing to shut down."""
    server = WebServer(metrics, readiness, port, host)
    server.bind()
    return server


__all__ = [
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "REQUEST_TIMEOUT",
    "STALL_AFTER",
    "WebServer",
    "bind",
    "bind_web",
    "respond",
]
