"""Serdes: how keys and values become bytes and back.

Use :func:`serde_for` to get one from a declared type, or :func:`avro` for an Avro schema.
"""

from __future__ import annotations

from streamer.serde.avro import AvroSerde
from streamer.serde.base import Serde
from streamer.serde.builtin import BytesSerde, FloatSerde, IntSerde, JsonSerde, StrSerde
from streamer.serde.pydantic_serde import PydanticSerde
from streamer.serde.resolve import avro, serde_for

__all__ = [
    "AvroSerde",
    "BytesSerde",
    "FloatSerde",
    "IntSerde",
    "JsonSerde",
    "PydanticSerde",
    "Serde",
    "StrSerde",
    "avro",
    "serde_for",
]
