"""Serdes for plain Python values: bytes, str, int, float and JSON.

Every serde here maps ``None`` to ``None`` both ways (Kafka tombstones), refuses values of
the wrong type with :class:`~streamer.errors.SerializationError`, and keeps no per-record
state. They use ``__slots__`` and class-level ``name`` because they sit on the hot path.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamer.errors import SerializationError

_PREVIEW_LIMIT = 80


def _preview(value: object) -> str:
    """A short ``repr`` of ``value`` for error messages (records can be megabytes)."""
    text = repr(value)
    if len(text) > _PREVIEW_LIMIT:
        text = text[: _PREVIEW_LIMIT - 3] + "..."
    return text


def _refuse(serde: str, expected: str, value: object) -> SerializationError:
    return SerializationError(
        f"{serde} serde expects {expected}, got {type(value).__name__} {_preview(value)}"
    )


class BytesSerde:
    """Identity: ``bytes`` in, the same ``bytes`` out. Also accepts bytearray/memoryview."""

    __slots__ = ()
    name: str = "bytes"

    def serialize(self, value: Any) -> bytes | None:
        if value is None or type(value) is bytes:
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise _refuse(self.name, "bytes", value)

    def deserialize(self, data: bytes | None) -> bytes | None:
        return data


class StrSerde:
    """``str`` as UTF-8. Undecodable bytes raise SerializationError."""

    __slots__ = ()
    name: str = "str"

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _refuse(self.name, "str", value)
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates cannot be encoded
            raise SerializationError(f"str cannot be encoded as UTF-8: {exc}") from exc

    def deserialize(self, data: bytes | None) -> str | None:
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerializationError(f"not valid UTF-8: {exc}") from exc


class IntSerde:
    """``int`` as UTF-8 decimal text (``42`` <-> ``b"42"``), readable by any consumer.

    ``bool`` is refused although it subclasses ``int``: ``True`` would not read back.
    """

    __slots__ = ()
    name: str = "int"

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(self.name, "int", value)
        try:
            return b"%d" % value
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            raise SerializationError(f"int too large to encode: {exc}") from exc

    def deserialize(self, data: bytes | None) -> int | None:
        if data is None:
            return None
        try:
            return int(data)  # int() parses ASCII digits from bytes directly
        except ValueError as exc:
            raise SerializationError(f"not a valid int: {_preview(data)}") from exc


class FloatSerde:
    """``float`` as UTF-8 decimal text (``1.5`` <-> ``b"1.5"``); ``int`` is widened to float.

    Uses ``repr`` so the text is the shortest that reads back to the identical float.
    """

    __slots__ = ()
    name: str = "float"

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise _refuse(self.name, "float", value)
        try:
            return repr(float(value)).encode("ascii")
        except OverflowError as exc:  # an int too large for a double
            raise SerializationError(f"int too large for a float: {exc}") from exc

    def deserialize(self, data: bytes | None) -> float | None:
        if data is None:
            return None
        try:
            return float(data)
        except ValueError as exc:
            raise SerializationError(f"not a valid float: {_preview(data)}") from exc


class JsonSerde:
    """Any JSON value (dict, list, str, number, bool) via orjson.

    JSON ``null`` cannot be told apart from a tombstone, so ``None`` encodes as no value.
    """

    __slots__ = ()
    name: str = "json"

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise SerializationError(f"not JSON-serializable: {exc}") from exc

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"not valid JSON: {exc}") from exc
