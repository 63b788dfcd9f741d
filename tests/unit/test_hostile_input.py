"""Hostile bytes against every serde (property tests with hypothesis): whatever arrives,
``deserialize`` returns a value or raises SerializationError with one bounded line; nothing
else escapes (no IndexError, RecursionError, MemoryError, hang), and valid values round-trip.
"""

from __future__ import annotations

from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streamer.errors import ConfigError, SerializationError
from streamer.serde import (
    AvroSerde,
    BytesSerde,
    FloatSerde,
    IntSerde,
    JsonSerde,
    PydanticSerde,
    Serde,
    StrSerde,
)

MAX_MESSAGE = 1000  # a refusal names the cause; it never echoes the record


class Item(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    id: str
    amount: float
    items: list[Item] = []
    tags: dict[str, str] = {}


ORDER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "flags", "type": {"type": "array", "items": "boolean"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
OTHER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Other",
    "fields": [{"name": "n", "type": "long"}, {"name": "blob", "type": "bytes"}],
}

SERDES: list[Serde] = [
    BytesSerde(),
    StrSerde(),
    IntSerde(),
    FloatSerde(),
    JsonSerde(),
    PydanticSerde(Order),
    AvroSerde(ORDER_SCHEMA),
    AvroSerde(ORDER_SCHEMA, model=None),
]
IDS = [serde.name for serde in SERDES]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_refuse(serde: Serde, data: bytes) -> object:
    """The property: a value, or a SerializationError with one short line."""
    try:
        return serde.deserialize(data)
    except SerializationError as exc:
        message = str(exc)
        assert "\n" not in message, message[:300]
        assert len(message) <= MAX_MESSAGE, (len(message), message[:300])
        return exc


@pytest.mark.parametrize("serde", SERDES, ids=IDS)
@FAST
@given(data=st.binary(max_size=2048))
def test_random_bytes_decode_or_are_refused(serde: Serde, data: bytes) -> None:
    decode_or_refuse(serde, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=30,
)  # fmt: skip


@FAST
@given(value=json_values)
def test_json_round_trips_and_every_truncation_is_refused_or_read(value: object) -> None:
    serde = JsonSerde()
    data = serde.serialize(value)
    if value is None:
        assert data is None
        return
    assert data is not None
    assert serde.deserialize(data) == value
    for cut in range(len(data)):
        decode_or_refuse(serde, data[:cut])


orders = st.builds(
    Order,
    id=st.text(max_size=30),
    amount=st.floats(allow_nan=False, allow_infinity=False),
    items=st.lists(st.builds(Item, sku=st.text(max_size=10), quantity=st.integers(-1000, 1000)),
                   max_size=4),
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
)  # fmt: skip


@FAST
@given(order=orders)
def test_pydantic_round_trips_and_truncations_are_refused(order: Order) -> None:
    serde = PydanticSerde(Order)
    data = serde.serialize(order)
    assert data is not None and serde.deserialize(data) == order
    for cut in range(0, len(data), max(1, len(data) // 40)):
        decode_or_refuse(serde, data[:cut])


avro_orders = st.fixed_dictionaries({
    "id": st.text(max_size=30),
    "amount": st.floats(allow_nan=False),
    "tags": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    "flags": st.lists(st.booleans(), max_size=4),
    "note": st.none() | st.text(max_size=10),
})  # fmt: skip


@FAST
@given(record=avro_orders, flip=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_avro_round_trips_and_damaged_records_are_refused_or_read(
    record: dict[str, Any], flip: int, byte: int
) -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    data = serde.serialize(record)
    assert data is not None and serde.deserialize(data) == record
    for cut in range(len(data)):
        decode_or_refuse(serde, data[:cut])
    damaged = bytearray(data)
    damaged[flip % len(damaged)] = byte
    decode_or_refuse(serde, bytes(damaged))


@FAST
@given(n=st.integers(), blob=st.binary(max_size=64))
def test_avro_written_with_another_schema_is_refused_or_read(n: int, blob: bytes) -> None:
    n = max(-(2**63), min(2**63 - 1, n))
    other = AvroSerde(OTHER_SCHEMA).serialize({"n": n, "blob": blob})
    assert other is not None
    decode_or_refuse(AvroSerde(ORDER_SCHEMA), other)
    decode_or_refuse(PydanticSerde(Order), other)


def _avro_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of ``n``."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append((value & 0x7F) | 0x80)
        value >>= 7


HOSTILE: dict[str, bytes] = {
    "json nested 10,000 deep (array)": b"[" * 10_000 + b"]" * 10_000,
    "json nested 10,000 deep (object)": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "10 MB of text": b"x" * (10 * 1024 * 1024),
    "10 MB of digits": b"7" * (10 * 1024 * 1024),
    "10 MB JSON string": b'"' + b"a" * (10 * 1024 * 1024) + b'"',
    "invalid UTF-8": b"\xff\xfe\xc3\x28 \xed\xa0\x80",
    "NUL bytes": b"\x00" * 1000,
    "JSON with a lone surrogate": b'"\\ud800"',
    "100,000 invalid items": b'{"id":"x","amount":1,"items":[' + b",".join([b"1"] * 100_000)
    + b"]}",
    # Avro: a string claiming 2**60 bytes, an array claiming 2**60 items.
    "avro string of 2**60 bytes": _avro_long(2**60) + b"abc",
    # id "", amount 0.0, tags {} and then flags: one block of 2**60 booleans.
    "avro array of 2**60 items": _avro_long(0) + bytes(8) + _avro_long(0) + _avro_long(2**60)
    + _avro_long(0),
    "avro negative lengths": _avro_long(-5) + b"abc",
}  # fmt: skip


@pytest.mark.parametrize("serde", SERDES, ids=IDS)
@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.timeout(60)
def test_hostile_records_are_refused_or_read_in_bounded_time(serde: Serde, name: str) -> None:
    decode_or_refuse(serde, HOSTILE[name])


@pytest.mark.parametrize(
    "items",
    ["null", {"type": "fixed", "name": "Nothing", "size": 0},
     {"type": "record", "name": "Empty", "fields": [{"name": "n", "type": "null"}]}],
)  # fmt: skip
def test_avro_arrays_of_zero_byte_items_are_refused_when_declared(items: object) -> None:
    # Decoding "2**60 nulls" from four bytes would never end: such a schema is a config error.
    schema = {"type": "record", "name": "R",
              "fields": [{"name": "xs", "type": {"type": "array", "items": items}}]}  # fmt: skip
    with pytest.raises(ConfigError, match="zero bytes"):
        AvroSerde(schema)
    AvroSerde({"type": "array", "items": ["null", "string"]})  # a union costs a byte: fine


def test_the_avro_helper_matches_fastavro() -> None:
    import io

    for n in (0, 1, -1, 63, -64, 2**40, -(2**40)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, {"type": "long"}, n)
        assert buf.getvalue() == _avro_long(n)
