"""The serde contract: how keys and values become bytes and back.

A serde is any object with ``serialize``, ``deserialize`` and a ``name``. Both methods are
called on the hot path, once per record, so they must be cheap and must not block.
Failures raise :class:`~streamer.errors.SerializationError` with a message that names the
field at fault where the format can tell; the topic adds its own name in front.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Serde(Protocol):
    """Turns Python values into bytes and back. ``None`` always maps to ``None`` (tombstones)."""

    name: str

    def serialize(self, value: Any) -> bytes | None:
        """Encode ``value``; raise SerializationError when it does not fit."""
        ...

    def deserialize(self, data: bytes | None) -> Any:
        """Decode ``data``; raise SerializationError when it is malformed."""
        ...
