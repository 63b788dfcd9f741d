"""Event: one consumed record, decoded, with the coordinates that make commits visible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from typing_extensions import TypeVar

# Defaults so a bare ``Event`` keeps meaning ``Event[Any, Any]``.
K = TypeVar("K", default=Any)
V = TypeVar("V", default=Any)

# As confluent-kafka takes them; consumed header values are always bytes (or None).
Headers = list[tuple[str, str | bytes | None]]


@dataclass(slots=True)
class Event(Generic[K, V]):
    """A record as an agent sees it (treat it as read-only).

    Not frozen on purpose: a frozen dataclass sets each field through
    ``object.__setattr__``, a measurable cost on the hot path (one Event per record).

    ``key`` and ``value`` are decoded with the topic's serdes; ``timestamp`` is the record's
    timestamp in milliseconds since the epoch; ``topic``, ``partition`` and ``offset`` say
    where it came from, so a user can always tell what will be committed. Annotate what the
    topic's serdes give: ``Event[str, Order]``.
    """

    key: K
    value: V
    headers: Headers
    timestamp: int
    topic: str
    partition: int
    offset: int


@dataclass(slots=True, frozen=True)
class Record:
    """An output an agent yields when it wants to choose key, value and headers explicitly.

    ``yield value`` keeps the input event's key; ``yield key, value`` (a 2-tuple) sets both;
    ``yield Record(key, value, headers)`` sets all three.
    """

    key: Any
    value: Any
    headers: Headers | None = None
