"""Request-reply: ``await agent.ask(key=..., value=..., timeout=5)`` and ``yield Reply(value)``.

The asker's side (:class:`ReplyClient`, one per app and broker per process, built on first
use by :class:`streamer.outside.Outside`):

1. the request is sent to the agent's (first) topic like any record, with two headers: the
   reply address ``streamer.reply-to`` (the app's reply topic ``<app id>-replies``) and a
   fresh ``streamer.correlation-id``; the record's key is the request's key, so the request
   keeps the ordering of its key;
2. the client reads every partition of the reply topic, ``read_committed``, from the end it
   saw before sending its first request (so no reply can slip past it), on a thread of its
   own, and resolves the waiting ``ask`` whose correlation id a reply carries.

The agent's side: ``yield streamer.Reply(value)`` stages the reply with the event being
processed, exactly like any other output (DESIGN §2 rule 2): it reaches the reply topic
when the event completes, through the committer, and under exactly-once in the same
transaction as the request's offset. A reply is therefore committed once per request; an
asker reading ``read_committed`` never sees the reply of an aborted attempt.

Replies are keyed by the asking client's id, so one client's replies stay in order.
Every client reads every partition of the shared reply topic and keeps only its own: a
simple, restart-free layout sized for request-reply traffic, not for bulk data.

A reply whose asker is gone (it timed out, or the process restarted) is dropped: the
client that sent it counts it in :attr:`ReplyClient.dropped`; a reply no client is
waiting for is ignored by every other client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_END, TopicPartition

from streamer._context import current_lane
from streamer.errors import RequestTimeout, StreamerError
from streamer.events import Headers
from streamer.kafka.admin import TopicSpec, ensure_topics
from streamer.kafka.clients import connect_admin, make_consumer
from streamer.kafka.sender import Sender
from streamer.settings import Settings

if TYPE_CHECKING:
    from streamer.kafka.backend import Consumer

log = logging.getLogger("streamer.replies")

REPLY_TO = "streamer.reply-to"
CORRELATION_ID = "streamer.correlation-id"
REPLY_CLIENT = "streamer.reply-client"
REPLY_PARTITIONS = 4
_POLL = 0.2  # how long the reader thread blocks in poll() (bounds how fast close() returns)


@dataclass(frozen=True, slots=True)
class Reply:
    """What an agent yields to answer the request it is processing: ``yield Reply(value)``.

    ``value`` is encoded with the agent's ``reply_type`` (JSON unless declared). Yielded for
    an event that is not a request (no reply address), it is dropped with a warning.
    """

    value: Any
    headers: Headers | None = None


def reply_topic(app_id: str) -> str:
    return f"{app_id}-replies"


def reply_address(headers: Headers) -> tuple[str, bytes, bytes] | None:
    """(reply topic, correlation id, client id) of a request's headers; None when the
    record is not a request."""
    topic = cid = client = None
    for name, value in headers:
        if name == REPLY_TO:
            topic = value
        elif name == CORRELATION_ID:
            cid = value
        elif name == REPLY_CLIENT:
            client = value
    if topic is None or cid is None or client is None:
        return None
    as_bytes = [v.encode() if isinstance(v, str) else v for v in (topic, cid, client)]
    return as_bytes[0].decode(), as_bytes[1], as_bytes[2]


class ReplyClient:
    """The asker's side of request-reply for app ``app_id`` in one process: requests go
    out through ``sender``, replies are read with ``settings`` through the sender's backend.
    Thread-safe; the reader thread starts on the first :meth:`ask` and stops on
    :meth:`close`."""

    def __init__(self, app_id: str, settings: Settings, sender: Sender) -> None:
        self._app_id = app_id
        self._settings = settings
        self._sender = sender
        self.client_id = uuid.uuid4().hex
        self.topic = reply_topic(app_id)
        # correlation id -> (the asker's future, its loop)
        self._waiting: dict[bytes, tuple[asyncio.Future[bytes | None], asyncio.AbstractEventLoop]]
        self._waiting = {}
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._start_error: BaseException | None = None
        self.dropped = 0  # replies to this client whose asker had gone (timed out)

    async def ask(
        self, agent: str, topic: str, key: bytes | None, value: bytes | None, timeout: float
    ) -> bytes | None:
        """Send an encoded request to agent ``agent`` over ``topic`` and return its reply's
        encoded value; raise :class:`~streamer.errors.RequestTimeout` when none came within
        ``timeout`` s."""
        lane = current_lane.get()
        if lane is not None and lane.partition >= 0:
            # The request would be staged with the event in progress and sent only when
            # that event completes: awaiting its reply inside the event could never end.
            raise StreamerError(
                f"ask() to agent {agent!r} from inside an agent's event would wait "
                "forever (its request is sent only when the event completes); send the "
                "request with topic.send() and handle the reply in another agent"
            )
        if timeout <= 0:
            raise ValueError("ask() needs timeout > 0")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start)
        cid = uuid.uuid4().hex.encode()
        future: asyncio.Future[bytes | None] = loop.create_future()
        with self._lock:
            self._waiting[cid] = (future, loop)
        try:
            headers: Headers = [
                (REPLY_TO, self.topic.encode()),
                (CORRELATION_ID, cid),
                (REPLY_CLIENT, self.client_id.encode()),
            ]
            await loop.run_in_executor(None, self._sender.send, topic, key, value, headers)
            try:
                data = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"no reply from agent {agent!r} within {timeout:g}s (request to "
                    f"{topic!r}, correlation id {cid.decode()}); the agent may be "
                    "down, busy, or have failed on it (see its dead-letter topic)"
                ) from None
        finally:
            with self._lock:
                self._waiting.pop(cid, None)
        return data

    def _start(self) -> None:
        """Create the reply topic if needed and start the reader at its current end
        (blocking; run in an executor). Idempotent."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"streamer-replies-{self._app_id}", daemon=True
                )
                self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _open(self) -> Consumer:
        s, backend = self._settings, self._sender.backend
        admin = connect_admin(backend, s.brokers, s.kafka_config)
        counts = ensure_topics(
            admin,
            [TopicSpec(self.topic, REPLY_PARTITIONS, None, {}, internal=True)],
            auto_create=s.topic_auto_create,
            default_replication=s.topic_replication,
            brokers=s.brokers,
        )
        overrides = {**s.kafka_config, **s.consumer_config}
        # No group: the reader is assigned every partition and never commits.
        consumer = make_consumer(
            backend, s.brokers, f"{self._app_id}-replies-{self.client_id}", overrides
        )
        start = []
        for partition in range(counts[self.topic]):
            tp = TopicPartition(self.topic, partition)
            try:  # the end now: every reply to a request sent after this lies beyond it
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
            except Exception:  # not known yet right after creation: nothing to skip
                high = OFFSET_END
            start.append(TopicPartition(self.topic, partition, max(high, 0)))
        consumer.assign(start)
        return consumer

    def _run(self) -> None:
        try:
            consumer = self._open()
        except BaseException as exc:
            self._start_error = exc
            with self._lock:
                self._thread = None  # the next ask tries again
            self._started.set()
            self._started = threading.Event()
            return
        self._started.set()
        mine = self.client_id.encode()
        try:
            while not self._closing:
                message = consumer.poll(_POLL)
                if message is None or message.error() is not None:
                    continue
                cid = client = None
                raw = message.headers() or []
                for name, value in raw.items() if isinstance(raw, dict) else raw:
                    if name == CORRELATION_ID:
                        cid = value.encode() if isinstance(value, str) else value
                    elif name == REPLY_CLIENT:
                        client = value.encode() if isinstance(value, str) else value
                if client != mine or cid is None:
                    continue  # another client's reply
                with self._lock:
                    waiting = self._waiting.pop(cid, None)
                if waiting is None:
                    self.dropped += 1
                    log.debug("reply %s arrived after its asker gave up; dropped", cid)
                    continue
                future, loop = waiting
                try:
                    loop.call_soon_threadsafe(_resolve, future, message.value())
                except RuntimeError:  # the asker's loop is closed: it is gone
                    self.dropped += 1
        finally:
            consumer.close()

    def close(self) -> None:
        """Stop the reader (within ~0.2 s); pending asks time out."""
        self._closing = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


def _resolve(future: asyncio.Future[bytes | None], data: bytes | None) -> None:
    if not future.done():
        future.set_result(data)
