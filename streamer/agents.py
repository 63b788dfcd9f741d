"""Agents and the stream they iterate.

An agent is an ``async def`` that takes a :class:`Stream` and iterates it. The worker runs
one instance of it per ordered key-lane of each assigned partition, so the code inside the
``async for`` sees the events of one lane in offset order.

The completion rule (DESIGN §2 rule 1): an event is complete when the agent asks for the
next one (the next ``__anext__``, or the next batch of :meth:`Stream.take`). Until then its
outputs (``yield`` and ``Topic.send``) are held back; they are released, in offset order,
only when every earlier event of the partition is complete too.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamer._context import current_event, held, settle
from streamer.errors import ConfigError
from streamer.events import Event
from streamer.policy import ErrorPolicy
from streamer.ratelimit import Rate, parse_rate
from streamer.serde import JsonSerde, Serde
from streamer.topics import Topic

AgentFn = Callable[["Stream"], Any]
_JSON: Serde = JsonSerde()


class EventSource(Protocol):
    """What a stream reads from: one lane of one partition (see ``streamer.worker.lanes``)."""

    async def next_event(self) -> Event:
        """Complete the events handed out before, then wait for the next; StopAsyncIteration
        when the lane closes."""
        ...

    async def next_batch(self, max_events: int, within: float) -> list[Event]:
        """Like next_event, for up to ``max_events`` events gathered for at most ``within`` s."""
        ...


class Batch(list[Event]):
    """A batch :meth:`Stream.take` hands out: a list of events. Iterating it (``for event in
    batch``) also tells the runtime which event the loop is at, so a windowed table written
    in the loop body files the write under that event's own time (not the batch's last)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Event]:
        for event in super().__iter__():
            current_event.set(event)
            yield event


class Stream:
    """The async iterator an agent receives. ``async for event in stream`` or ``take``."""

    __slots__ = ("_source",)

    def __init__(self, source: EventSource) -> None:
        self._source = source

    def __aiter__(self) -> Stream:
        return self

    def __anext__(self) -> Awaitable[Event]:
        # Not a coroutine itself: it hands back the lane's, one coroutine per event, not
        # two (this runs once per event).
        if held:
            return self._settled_next()
        return self._source.next_event()

    async def _settled_next(self) -> Event:
        # A window callback suspended inside the event in progress: it finishes before
        # the event completes, so its outputs commit with the event (window_callbacks).
        await settle(self._source)
        return await self._source.next_event()

    async def take(self, max_events: int, within: float) -> AsyncIterator[list[Event]]:
        """Yield batches of up to ``max_events`` events, waiting at most ``within`` seconds
        after the first event of a batch for it to fill. A batch is complete when the next
        one is asked for."""
        if max_events < 1 or within <= 0:
            raise ValueError("take() needs max_events >= 1 and within > 0")
        while True:
            if held:
                await settle(self._source)
            try:
                batch = await self._source.next_batch(max_events, within)
            except StopAsyncIteration:
                return
            yield Batch(batch)


@dataclass(frozen=True)
class Agent:
    """A declared agent: its function, the topics it reads, where its yields go.

    ``@app.agent(...)`` returns it: calling it calls the function; :meth:`ask` sends it a
    request and awaits the reply it yields (``yield streamer.Reply(value)``).
    """

    fn: AgentFn
    name: str
    topics: tuple[Topic, ...]
    sinks: tuple[Topic, ...]
    concurrency: int
    on_error: ErrorPolicy | None = None  # None: the app's default
    internal: bool = False  # streamer's own (a group_by's repartitioner), not the user's
    reply_serde: Serde = _JSON  # encodes what it yields as Reply(value)
    rate_limit: Rate | None = None  # events per second over the agent's lanes (one worker)
    rate_limit_per_key: Rate | None = None  # events per second of one key
    # Topics whose records carry a due time (streamer.delays): lanes hold each until due.
    held: frozenset[str] = frozenset()
    # What this internal agent's records are applied to on dispatch (streamer.worker.inline):
    # the VersionedTable of app.table_from, the StreamJoin of app.join, the TableJoin of
    # app.table_join. None for every other agent.
    table: Any = None

    def __call__(self, stream: Stream) -> Any:
        return self.fn(stream)

    async def ask(self, *, key: Any = None, value: Any = None, timeout: float = 5.0) -> Any:
        """Send ``key``/``value`` to this agent's (first) topic as a request and return the
        value of the agent's ``Reply``. Raises :class:`~streamer.errors.RequestTimeout`
        after ``timeout`` seconds without one. Call it from code outside the agents' events
        (a web handler, a script, a timer): see ``docs/task-patterns.md``."""
        topic = self.topics[0]
        data = await topic.outside.replies.ask(
            self.name, topic.name, topic.encode_key(key), topic.encode_value(value), timeout
        )
        return self.reply_serde.deserialize(data)

    @property
    def yields(self) -> bool:
        """True when the function is an async generator (its yields go to the sinks)."""
        return inspect.isasyncgenfunction(self.fn)


def make_agent(
    fn: AgentFn,
    topics: Sequence[Topic],
    *,
    sinks: Sequence[Topic],
    concurrency: int,
    name: str | None,
    on_error: ErrorPolicy | None = None,
    internal: bool = False,
    reply_serde: Serde | None = None,
    rate_limit: str | None = None,
    rate_limit_per_key: str | None = None,
    held: frozenset[str] = frozenset(),
) -> Agent:
    """Validate a declaration; raise ConfigError with the fix when it is wrong."""
    label: str = name or getattr(fn, "__name__", None) or repr(fn)
    if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
        raise ConfigError(f"agent {label!r} must be an `async def` taking a stream")
    if not topics:
        raise ConfigError(f"agent {label!r} reads no topic: pass @app.agent(topic)")
    if concurrency < 1:
        raise ConfigError(f"agent {label!r}: concurrency must be >= 1, got {concurrency}")
    if sinks and not inspect.isasyncgenfunction(fn):
        raise ConfigError(
            f"agent {label!r} has sinks but never yields; `yield value` sends to the sinks"
        )
    return Agent(
        fn, label, tuple(topics), tuple(sinks), concurrency, on_error, internal,
        reply_serde or _JSON,
        parse_rate(rate_limit, f"agent {label!r}: rate_limit"),
        parse_rate(rate_limit_per_key, f"agent {label!r}: rate_limit_per_key"),
        held,
    )  # fmt: skip
