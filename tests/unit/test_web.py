"""The web endpoints against hostile clients: slow, malformed, flooding, or a failing handler."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from streamer import App
from streamer.errors import ConfigError
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.readiness import Readiness
from streamer.worker.web import MAX_REQUEST_BYTES, WebServer, bind_web


@pytest.fixture
def server() -> Iterator[WebServer]:
    app = App("web-test", brokers="memory://web-test")
    web = WebServer(WorkerMetrics(app, {}), Readiness({}, {}), 0)
    web.start()
    yield web
    asyncio.run(web.close())


def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, None, timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data``, then read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_listens_on_loopback_by_default(server: WebServer) -> None:
    assert server._sock is not None
    assert server._sock.getsockname()[0] == "127.0.0.1"
    assert _get(server.port, "/health") == (200, b'{"status":"alive"}\n')


def test_slow_clients_do_not_hold_up_others(server: WebServer) -> None:
    # Fifty clients that open a request and never finish it (slowloris): each costs a
    # coroutine, not a thread, so /metrics still answers at once for everyone else.
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        status, body = _get(server.port, "/metrics", timeout=5)
        assert status == 200 and b"streamer_worker_info" in body
    finally:
        for sock in slow:
            sock.close()


def test_malformed_requests_get_short_answers_without_tracebacks(server: WebServer) -> None:
    cases = {
        b"\x00\xff garbage\r\n\r\n": b"400",
        b"GET\r\n\r\n": b"400",
        b"POST /metrics HTTP/1.1\r\n\r\n": b"405",
        b"GET /" + b"a" * (MAX_REQUEST_BYTES * 2) + b" HTTP/1.1\r\n\r\n": b"431",
        b"GET /%ff%00?\xff HTTP/1.1\r\n\r\n": b"404",
    }
    for request, status in cases.items():
        answer = _raw(server.port, request)
        assert answer.split(b" ", 2)[1] == status, (request[:40], answer[:200])
        assert b"Traceback" not in answer and b"File " not in answer
    assert _get(server.port, "/health")[0] == 200  # and it still serves


def test_a_failing_endpoint_answers_500_without_the_traceback(
    server: WebServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> bytes:
        raise RuntimeError("secret internals /home/app/config.py line 3")

    monkeypatch.setattr(server.metrics, "exposition", explode)
    status, body = _get(server.port, "/metrics")
    assert status == 500
    assert body == b"internal error\n"
    assert "secret internals" not in body.decode()
    assert any("web endpoint failed" in r.getMessage() for r in caplog.records)


def test_a_taken_port_is_one_line_naming_it() -> None:
    app = App("web-test", brokers="memory://web-test")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            bind_web(WorkerMetrics(app, {}), Readiness({}, {}), port, "127.0.0.1")
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "already in use" in message
    assert "--web-port" in message


def test_web_host_setting_defaults_to_loopback() -> None:
    assert App("web-test", brokers="memory://x").settings.web_host == "127.0.0.1"
    assert App("web-test", brokers="memory://x", web_host="0.0.0.0").settings.web_host == "0.0.0.0"
