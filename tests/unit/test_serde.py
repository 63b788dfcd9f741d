"""Unit tests for streamer.serde: round-trips, error messages, schema loading, resolution."""

from __future__ import annotations

import json
import struct
import typing
from pathlib import Path
from typing import Any

import pytest
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
    avro,
    serde_for,
)

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

ORDER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "streamer.demo",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


class Order(BaseModel):
    id: str
    customer: str
    amount: float
    note: str | None = None


class Line(BaseModel):
    sku: str
    qty: int


class Basket(BaseModel):
    lines: list[Line]


# --- builtin serdes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serde", "value", "encoded"),
    [
        (BytesSerde(), b"\x00\xffraw", b"\x00\xffraw"),
        (StrSerde(), "héllo", "héllo".encode()),
        (IntSerde(), 42, b"42"),
        (IntSerde(), -7, b"-7"),
        (IntSerde(), 2**70, b"1180591620717411303424"),
        (FloatSerde(), 1.5, b"1.5"),
        (FloatSerde(), 0.1, b"0.1"),
        (FloatSerde(), -2.5e-300, b"-2.5e-300"),
        (JsonSerde(), {"a": [1, 2.5, "x", None, True]}, b'{"a":[1,2.5,"x",null,true]}'),
        (JsonSerde(), [1, {"b": False}], b'[1,{"b":false}]'),
        (JsonSerde(), "text", b'"text"'),
    ],
)
def test_builtin_round_trip(serde: Serde, value: object, encoded: bytes) -> None:
    assert serde.serialize(value) == encoded
    decoded = serde.deserialize(encoded)
    assert decoded == value
    assert type(decoded) is type(value)


def test_float_serde_widens_int() -> None:
    assert FloatSerde().serialize(3) == b"3.0"
    assert FloatSerde().deserialize(b"3.0") == 3.0


def test_bytes_serde_accepts_bytearray() -> None:
    out = BytesSerde().serialize(bytearray(b"ab"))
    assert out == b"ab"
    assert type(out) is bytes


@pytest.mark.parametrize(
    "serde",
    [
        BytesSerde(),
        StrSerde(),
        IntSerde(),
        FloatSerde(),
        JsonSerde(),
        PydanticSerde(Order),
        AvroSerde(ORDER_SCHEMA),
    ],
    ids=lambda s: s.name,
)
def test_none_is_a_tombstone(serde: Serde) -> None:
    assert isinstance(serde, Serde)
    assert serde.serialize(None) is None
    assert serde.deserialize(None) is None


def test_names() -> None:
    assert [s.name for s in (BytesSerde(), StrSerde(), IntSerde(), FloatSerde(), JsonSerde())] == [
        "bytes",
        "str",
        "int",
        "float",
        "json",
    ]
    assert PydanticSerde(Order).name == "pydantic:Order"
    assert AvroSerde(ORDER_SCHEMA).name == "avro:streamer.demo.Order"


def test_bad_json_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not valid JSON: "):
        JsonSerde().deserialize(b"{not json")


def test_unserializable_json_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not JSON-serializable: .*set"):
        JsonSerde().serialize({1, 2})


def test_bad_int_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not a valid int: b'4x2'$"):
        IntSerde().deserialize(b"4x2")


def test_bad_float_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not a valid float: b'one'$"):
        FloatSerde().deserialize(b"one")


def test_bad_utf8_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not valid UTF-8: "):
        StrSerde().deserialize(b"\xff\xfe")


@pytest.mark.parametrize(
    ("serde", "value", "message"),
    [
        (StrSerde(), 5, "str serde expects str, got int 5"),
        (IntSerde(), True, "int serde expects int, got bool True"),
        (IntSerde(), "42", "int serde expects int, got str '42'"),
        (FloatSerde(), "1.5", "float serde expects float, got str '1.5'"),
        (BytesSerde(), "abc", "bytes serde expects bytes, got str 'abc'"),
    ],
)
def test_wrong_type_is_refused(serde: Serde, value: object, message: str) -> None:
    with pytest.raises(SerializationError) as info:
        serde.serialize(value)
    assert str(info.value) == message


# --- pydantic ---------------------------------------------------------------------------


def test_pydantic_round_trip() -> None:
    serde = PydanticSerde(Order)
    order = Order(id="o1", customer="c1", amount=9.5)
    data = serde.serialize(order)
    assert data is not None
    assert json.loads(data) == {"id": "o1", "customer": "c1", "amount": 9.5, "note": None}
    back = serde.deserialize(data)
    assert isinstance(back, Order)
    assert back == order


def test_pydantic_accepts_dict_validated_through_model() -> None:
    serde = PydanticSerde(Order)
    data = serde.serialize({"id": "o1", "customer": "c1", "amount": "2"})
    assert data is not None
    # "2" was coerced by the model: only validated data reaches the topic.
    assert json.loads(data)["amount"] == 2.0


def test_pydantic_validation_failure_names_field() -> None:
    serde = PydanticSerde(Order)
    with pytest.raises(SerializationError) as info:
        serde.deserialize(b'{"id": "o1", "customer": "c", "amount": "abc"}')
    assert str(info.value) == (
        "not a valid Order: amount: Input should be a valid number, "
        "unable to parse string as a number"
    )


def test_pydantic_failure_lists_every_field_with_dotted_location() -> None:
    serde = PydanticSerde(Basket)
    with pytest.raises(SerializationError) as info:
        serde.serialize({"lines": [{"sku": "a", "qty": 1}, {"qty": "many"}]})
    message = str(info.value)
    assert message.startswith("not a valid Basket: ")
    assert "lines.1.sku: Field required" in message
    assert "lines.1.qty: Input should be a valid integer" in message


def test_pydantic_bad_json_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^not a valid Order: Invalid JSON: "):
        PydanticSerde(Order).deserialize(b"{oops")


def test_pydantic_wrong_type_names_model() -> None:
    with pytest.raises(SerializationError) as info:
        PydanticSerde(Order).serialize(Line(sku="a", qty=1))
    assert str(info.value).startswith("expected a Order (or a dict of its fields), got Line ")


# --- avro -------------------------------------------------------------------------------


def _expected_order_bytes(id_: str, customer: str, amount: float) -> bytes:
    """Hand-encoded Avro: zigzag-varint length + UTF-8 strings, LE double, union index 0."""

    def string(s: str) -> bytes:
        raw = s.encode()
        assert len(raw) < 64  # a one-byte zigzag varint
        return bytes([len(raw) * 2]) + raw

    return string(id_) + string(customer) + struct.pack("<d", amount) + b"\x00"


def test_avro_from_repo_schema_dir_encodes_exact_bytes() -> None:
    serde = AvroSerde("order", schema_dir=REPO_SCHEMAS)
    assert serde.name == "avro:streamer.demo.Order"
    record = {"id": "o1", "customer": "c", "amount": 1.5, "note": None}
    data = serde.serialize(record)
    assert data == _expected_order_bytes("o1", "c", 1.5)
    assert serde.deserialize(data) == record


def test_avro_fills_optional_default_and_round_trips_note() -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    assert serde.deserialize(serde.serialize({"id": "a", "customer": "b", "amount": 2.0})) == {
        "id": "a",
        "customer": "b",
        "amount": 2.0,
        "note": None,
    }
    full = {"id": "a", "customer": "b", "amount": 2.0, "note": "rush"}
    assert serde.deserialize(serde.serialize(full)) == full


def test_avro_loaded_by_name_from_tmp_dir(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}
    (tmp_path / "ping.avsc").write_text(json.dumps(schema))
    serde = AvroSerde("ping", schema_dir=tmp_path)
    assert serde.name == "avro:Ping"
    assert serde.serialize({"n": -1}) == b"\x01"  # zigzag(-1) == 1
    assert serde.deserialize(b"\x01") == {"n": -1}


def test_avro_from_json_text_and_path(tmp_path: Path) -> None:
    text = json.dumps(ORDER_SCHEMA)
    path = tmp_path / "anything.avsc"
    path.write_text(text)
    record = {"id": "x", "customer": "y", "amount": 0.25, "note": None}
    expected = _expected_order_bytes("x", "y", 0.25)
    assert AvroSerde(text).serialize(record) == expected
    assert AvroSerde(path).serialize(record) == expected


def test_avro_missing_schema_names_directory(tmp_path: Path) -> None:
    (tmp_path / "other.avsc").write_text(json.dumps(ORDER_SCHEMA))
    with pytest.raises(ConfigError) as info:
        AvroSerde("nope", schema_dir=tmp_path)
    message = str(info.value)
    assert "'nope'" in message
    assert str(tmp_path.resolve()) in message
    assert "nope.avsc" in message
    assert "available: other" in message


def test_avro_invalid_schema_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.avsc").write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.avsc is not valid JSON"):
        AvroSerde("broken", schema_dir=tmp_path)
    with pytest.raises(ConfigError, match="invalid Avro schema"):
        AvroSerde({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nosuch"}]})


def test_avro_wrong_field_type_names_field() -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    with pytest.raises(SerializationError) as info:
        serde.serialize({"id": "o1", "customer": "c", "amount": "abc"})
    assert str(info.value) == (
        "does not fit Avro schema 'streamer.demo.Order': field 'amount' expects double, got 'abc'"
    )


def test_avro_missing_field_names_field() -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    with pytest.raises(SerializationError) as info:
        serde.serialize({"id": "o1", "amount": 1.0})
    assert str(info.value) == (
        "does not fit Avro schema 'streamer.demo.Order': field 'customer' expects string, "
        "got None (or the field is missing)"
    )


def test_avro_union_mismatch_lists_branches() -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    with pytest.raises(SerializationError) as info:
        serde.serialize({"id": "o1", "customer": "c", "amount": 1.0, "note": 3})
    assert str(info.value).endswith("field 'note' expects null or string, got 3")


def test_avro_nested_field_uses_path_from_top() -> None:
    schema = {
        "type": "record",
        "name": "Basket",
        "namespace": "shop",
        "fields": [
            {
                "name": "lines",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Line",
                        "fields": [{"name": "sku", "type": "string"}],
                    },
                },
            }
        ],
    }
    with pytest.raises(SerializationError) as info:
        AvroSerde(schema).serialize({"lines": [{"sku": "a"}, {"sku": 7}]})
    assert str(info.value) == (
        "does not fit Avro schema 'shop.Basket': field 'lines.sku' expects string, got 7"
    )


def test_avro_non_record_value_is_refused() -> None:
    with pytest.raises(SerializationError) as info:
        AvroSerde(ORDER_SCHEMA).serialize(5)
    assert str(info.value) == (
        "does not fit Avro schema 'streamer.demo.Order': "
        "value expects record streamer.demo.Order, got 5"
    )


def test_avro_malformed_bytes_are_refused() -> None:
    serde = AvroSerde(ORDER_SCHEMA)
    with pytest.raises(
        SerializationError, match=r"^not valid Avro for schema 'streamer.demo.Order': "
    ):
        serde.deserialize(b"\x04o")  # string claims 2 bytes, has 1, then nothing
    good = _expected_order_bytes("o1", "c", 1.5)
    with pytest.raises(SerializationError, match="2 trailing bytes after the record"):
        serde.deserialize(good + b"xx")


def test_avro_with_model_round_trips_model() -> None:
    serde = avro(ORDER_SCHEMA, model=Order)
    assert isinstance(serde, AvroSerde)
    order = Order(id="o9", customer="cx", amount=3.25, note="gift")
    data = serde.serialize(order)
    assert data == serde.serialize(order.model_dump())
    back = serde.deserialize(data)
    assert isinstance(back, Order)
    assert back == order


def test_avro_with_model_refuses_other_types() -> None:
    serde = avro(ORDER_SCHEMA, model=Order)
    with pytest.raises(SerializationError, match=r"^expected a Order .* got Line "):
        serde.serialize(Line(sku="a", qty=1))


# --- serde_for --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "cls"),
    [
        (None, BytesSerde),
        (bytes, BytesSerde),
        (str, StrSerde),
        (int, IntSerde),
        (float, FloatSerde),
        (dict, JsonSerde),
        (list, JsonSerde),
        (dict[str, int], JsonSerde),
        (list[Order], JsonSerde),
        (typing.Dict[str, Any], JsonSerde),  # noqa: UP006 - the old alias must work too
    ],
)
def test_serde_for_maps_types(tp: object, cls: type) -> None:
    assert type(serde_for(tp)) is cls


def test_serde_for_pydantic_model() -> None:
    serde = serde_for(Order)
    assert isinstance(serde, PydanticSerde)
    assert serde.model is Order
    assert serde.deserialize(b'{"id":"1","customer":"c","amount":1}') == Order(
        id="1", customer="c", amount=1.0
    )


def test_serde_for_avro_name_uses_schema_dir() -> None:
    serde = serde_for("avro:order", schema_dir=REPO_SCHEMAS)
    assert isinstance(serde, AvroSerde)
    assert serde.name == "avro:streamer.demo.Order"


def test_serde_for_passes_custom_serde_through() -> None:
    class Upper:
        name = "upper"

        def serialize(self, value: Any) -> bytes | None:
            return None if value is None else str(value).upper().encode()

        def deserialize(self, data: bytes | None) -> Any:
            return None if data is None else data.decode().lower()

    custom = Upper()
    assert serde_for(custom) is custom
    existing = AvroSerde(ORDER_SCHEMA)
    assert serde_for(existing) is existing


@pytest.mark.parametrize(("tp", "shown"), [(set, "set"), (bool, "bool"), ("order", "'order'")])
def test_serde_for_unknown_type_is_config_error(tp: object, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        serde_for(tp)
    assert str(info.value) == (
        f"no serde for type {shown}; pass a Serde instance (an object with "
        "serialize/deserialize/name), or one of bytes, str, int, float, dict, list, "
        "a pydantic model, streamer.avro('schema-name')"
    )


def test_serde_for_refuses_serde_class() -> None:
    with pytest.raises(ConfigError, match="JsonSerde is a serde class; pass an instance"):
        serde_for(JsonSerde)
