"""How code outside a worker's events reaches Kafka: ``topic.send()`` from a script or a web
handler, and ``agent.ask()``.

Each App hands its topics one :class:`Outside` built from its declared settings, with
confluent-kafka clients, built on first use. A test kit (or any code that runs an app
against another broker) does not change the app: it installs its own ``Outside`` for the
app's id with :func:`redirect`, for the code running in the current context (a context
variable, so tasks started from it see it too). Inside a worker's events nothing here is
used: sends are staged with the event (``streamer._context``).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token

from streamer.kafka.backend import Backend, ConfluentBackend
from streamer.kafka.sender import Sender
from streamer.replies import ReplyClient
from streamer.settings import Settings


class Outside:
    """The clients of app ``app_id`` outside a worker's events: a :class:`Sender` and a
    :class:`~streamer.replies.ReplyClient`, both built on first use from ``settings`` and
    ``backend`` (confluent-kafka unless given)."""

    def __init__(self, app_id: str, settings: Settings, backend: Backend | None = None) -> None:
        self.app_id = app_id
        self.settings = settings
        self.backend: Backend = ConfluentBackend() if backend is None else backend
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._replies: ReplyClient | None = None

    def __repr__(self) -> str:
        return f"Outside({self.app_id!r}, {self.settings.brokers!r}, {self.backend!r})"

    @property
    def sender(self) -> Sender:
        with self._lock:
            if self._sender is None:
                s = self.settings
                config = {**s.kafka_config, **s.producer_config}
                self._sender = Sender(self.backend, s.brokers, config)
            return self._sender

    @property
    def replies(self) -> ReplyClient:
        sender = self.sender
        with self._lock:
            if self._replies is None:
                self._replies = ReplyClient(self.app_id, self.settings, sender)
            return self._replies

    def reconfigure(self, settings: Settings, backend: Backend) -> None:
        """Use ``settings`` and ``backend`` from now on: the clients built with the previous
        ones are closed, new ones are built on next use."""
        self.close()
        self.settings = settings
        self.backend = backend

    def close(self) -> None:
        """Stop the reply reader and finish what the sender holds; both are built again on
        next use."""
        with self._lock:
            replies, self._replies = self._replies, None
            sender, self._sender = self._sender, None
        if replies is not None:
            replies.close()
        if sender is not None:
            sender.close()


# app id -> the Outside that replaces the app's own in this context (see redirect()).
_redirected: ContextVar[dict[str, Outside]] = ContextVar("streamer_outside")

Redirection = Token[dict[str, Outside]]


def active(declared: Outside) -> Outside:
    """The Outside code in this context uses for ``declared``'s app: one :func:`redirect`
    installed for that app id, else ``declared`` itself."""
    return _redirected.get({}).get(declared.app_id, declared)


def redirect(outside: Outside) -> Redirection:
    """Make code in this context (and tasks started from it afterwards) reach Kafka through
    ``outside`` for its app id, until :func:`restore` is given the returned token."""
    return _redirected.set({**_redirected.get({}), outside.app_id: outside})


def restore(token: Redirection, outside: Outside) -> None:
    """End the redirection ``token`` installed, and close ``outside``. Called from another
    context than :func:`redirect` (a test framework's teardown task), it removes
    ``outside``'s app id from this context's redirections instead."""
    try:
        _redirected.reset(token)
    except ValueError:  # created in another context: nothing to reset here
        current = dict(_redirected.get({}))
        if current.get(outside.app_id) is outside:
            del current[outside.app_id]
            _redirected.set(current)
    outside.close()
