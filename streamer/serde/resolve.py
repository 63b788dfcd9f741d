"""Pick a serde from what a user declared: a Python type, a pydantic model, or a serde."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streamer.errors import ConfigError
from streamer.serde.avro import AvroSerde
from streamer.serde.base import Serde
from streamer.serde.builtin import BytesSerde, FloatSerde, IntSerde, JsonSerde, StrSerde
from streamer.serde.pydantic_serde import PydanticSerde

__all__ = ["avro", "serde_for"]

# The serdes are stateless, so one shared instance per plain type is enough.
_PLAIN: dict[object, Serde] = {
    None: BytesSerde(),
    bytes: BytesSerde(),
    str: StrSerde(),
    int: IntSerde(),
    float: FloatSerde(),
    dict: JsonSerde(),
    list: JsonSerde(),
}

_AVRO_PREFIX = "avro:"


def avro(
    schema: str | dict[str, Any] | Path,
    *,
    model: type[BaseModel] | None = None,
    schema_dir: str | Path = "schemas",
) -> AvroSerde:
    """An Avro serde for ``schema`` (a name in ``schema_dir``, JSON text, a dict or a Path).

    See :class:`~streamer.serde.avro.AvroSerde`; raises ConfigError if the schema is missing
    or invalid.
    """
    return AvroSerde(schema, model=model, schema_dir=schema_dir)


def serde_for(tp: object, *, schema_dir: str | Path = "schemas") -> Serde:
    """The serde for a declared key/value type ``tp``.

    ``None``/``bytes`` -> bytes, ``str``/``int``/``float`` -> text, ``dict``/``list`` (also
    ``dict[...]``/``list[...]``) -> JSON, a pydantic model class -> its JSON, and a string
    ``"avro:<name>"`` -> Avro with ``<schema_dir>/<name>.avsc``. A serde instance is
    returned unchanged. Anything else raises ConfigError (at declaration, not mid-stream).
    """
    if isinstance(tp, type):
        # Classes first: a serde *class* also has serialize/deserialize/name attributes and
        # would pass the protocol check below, though it cannot be used uninstantiated.
        if tp in _PLAIN:
            return _PLAIN[tp]
        if issubclass(tp, BaseModel):
            return PydanticSerde(tp)
        if hasattr(tp, "serialize") and hasattr(tp, "deserialize"):
            raise ConfigError(f"{tp.__qualname__} is a serde class; pass an instance of it")
    elif tp is None:
        return _PLAIN[None]
    elif typing.get_origin(tp) in (dict, list):
        return _PLAIN[typing.get_origin(tp)]
    elif isinstance(tp, str) and tp.startswith(_AVRO_PREFIX):
        return AvroSerde(tp[len(_AVRO_PREFIX) :], schema_dir=schema_dir)
    elif isinstance(tp, Serde):
        return tp
    name = tp.__qualname__ if isinstance(tp, type) else repr(tp)
    raise ConfigError(
        f"no serde for type {name}; pass a Serde instance (an object with "
        "serialize/deserialize/name), or one of bytes, str, int, float, dict, list, "
        "a pydantic model, streamer.avro('schema-name')"
    )
