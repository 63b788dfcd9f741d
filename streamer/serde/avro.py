"""Avro serde: schemaless Avro binary (no container header, no schema-registry prefix).

The schema is parsed once, at construction; a missing or invalid schema is a
:class:`~streamer.errors.ConfigError` raised before any record flows. Per record, a value is
validated against the schema (so the error can name the field) and then written.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import SchemaParseException
from fastavro.validation import ValidationError, ValidationErrorData, validate
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from streamer.errors import ConfigError, SerializationError
from streamer.serde.builtin import _preview
from streamer.serde.pydantic_serde import describe_validation_error

__all__ = ["AvroSerde", "load_schema"]


def load_schema(schema: str | dict[str, Any] | Path, schema_dir: str | Path) -> Any:
    """Return the raw (unparsed) schema ``schema`` stands for.

    A ``dict`` is the schema itself; a ``str`` starting like JSON is schema text; any other
    ``str`` is a schema name read from ``<schema_dir>/<name>.avsc``; a ``Path`` is a file.
    Raises ConfigError if the file is missing or is not JSON.
    """
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
        return _parse_json(schema, "schema text")
    if isinstance(schema, str):
        directory = Path(schema_dir)
        path = directory / f"{schema}.avsc"
        if not path.is_file():
            found = sorted(p.stem for p in directory.glob("*.avsc")) if directory.is_dir() else []
            available = f"available: {', '.join(found)}" if found else "no .avsc files there"
            raise ConfigError(
                f"no Avro schema named {schema!r}: searched {directory.resolve()} for "
                f"{path.name} ({available})"
            )
    else:
        path = schema
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
    return _parse_json(text, str(path))


def _parse_json(text: str, origin: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"Avro schema in {origin} is not valid JSON: {exc}") from exc


def _label(schema: Any) -> str:
    """Short human name of a (parsed) schema node, e.g. ``double``, ``record a.B``."""
    if isinstance(schema, list):
        return " or ".join(_label(branch) for branch in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if "name" in schema:
            return f"{kind} {schema['name']}"
        if kind == "array":
            return f"array of {_label(schema.get('items'))}"
        if kind == "map":
            return f"map of {_label(schema.get('values'))}"
        return _label(kind)
    return str(schema)


def _unbounded_arrays(parsed: Any) -> list[str]:
    """Labels of arrays (or maps' values) whose items take zero bytes (null, fixed of size 0,
    records of such): a record of a few bytes may claim 2**60 of them, and decoding it would
    never end. Such schemas are refused when declared."""
    records: dict[str, Any] = {}
    found: list[str] = []

    def zero(node: Any, seen: frozenset[str]) -> bool:
        if isinstance(node, str):
            if node in records and node not in seen:
                return zero(records[node], seen | {node})
            return node == "null"
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "fixed":
                return int(node.get("size", 1)) == 0
            if kind in ("record", "error"):
                return all(zero(f["type"], seen) for f in node["fields"])
            return isinstance(kind, str) and kind not in ("array", "map") and zero(kind, seen)
        return False  # a union costs its index, at least one byte

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error"):
                records.setdefault(node["name"], node)
                for field in node["fields"]:
                    walk(field["type"])
            elif kind == "array":
                walk(node["items"])
                if zero(node["items"], frozenset()):
                    found.append(_label(node))

    walk(parsed)
    return found


def _record_paths(parsed: Any) -> dict[str, str]:
    """Map each record's fullname to the dotted field path where it first appears.

    fastavro reports a failing field as ``<record fullname>.<field>``; this map turns that
    into the path a user wrote, e.g. ``streamer.demo.Line.sku`` -> ``lines.sku``.
    """
    paths: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, path)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error") and node["name"] not in paths:
                paths[node["name"]] = path
                for field in node["fields"]:
                    walk(field["type"], f"{path}.{field['name']}" if path else field["name"])
            elif kind == "array":
                walk(node["items"], path)
            elif kind == "map":
                walk(node["values"], path)

    walk(parsed, "")
    return paths


class AvroSerde:
    """Encodes dicts (or ``model`` instances) as schemaless Avro binary, and back.

    ``schema``: a dict, JSON text, a ``Path`` to an ``.avsc`` file, or a schema name looked up
    as ``<schema_dir>/<name>.avsc`` (relative to the working directory). With ``model``,
    ``serialize`` also accepts instances (``model_dump()``) and ``deserialize`` returns
    instances (``model_validate``). ``None`` <-> ``None``. ``name`` is ``avro:<fullname>``.
    """

    __slots__ = ("_model", "_parsed", "_paths", "_schema_name", "name")
    name: str

    def __init__(
        self,
        schema: str | dict[str, Any] | Path,
        *,
        model: type[BaseModel] | None = None,
        schema_dir: str | Path = "schemas",
    ) -> None:
        raw = load_schema(schema, schema_dir)
        try:
            self._parsed: Any = fastavro.parse_schema(raw)
        except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"invalid Avro schema {_preview(schema)}: {exc}") from exc
        if unbounded := _unbounded_arrays(self._parsed):
            raise ConfigError(
                f"Avro schema {_preview(schema)} has an {unbounded[0]}: items of zero bytes let "
                "a hostile record of a few bytes claim 2**60 of them and hang the decoder; "
                "give the items a type that takes space (e.g. boolean)"
            )
        self._model = model
        self._paths = _record_paths(self._parsed)
        if isinstance(self._parsed, dict):
            self._schema_name = str(self._parsed.get("name", self._parsed.get("type")))
        else:  # a primitive name or a top-level union
            self._schema_name = _label(self._parsed)
        self.name = f"avro:{self._schema_name}"

    @property
    def schema(self) -> Any:
        """The parsed schema (as returned by ``fastavro.parse_schema``)."""
        return self._parsed

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if self._model is not None:
            if isinstance(value, self._model):
                value = value.model_dump()
            elif not isinstance(value, dict):
                raise SerializationError(
                    f"expected a {self._model.__name__} (or a dict of its fields) for Avro "
                    f"schema {self._schema_name!r}, got {type(value).__name__} {_preview(value)}"
                )
        try:
            validate(value, self._parsed, raise_errors=True)
        except ValidationError as exc:
            raise SerializationError(
                f"does not fit Avro schema {self._schema_name!r}: {self._describe(exc)}"
            ) from exc
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self._parsed, value)
        except Exception as exc:  # validated already; anything left is still the value's fault
            raise SerializationError(
                f"cannot encode value as Avro schema {self._schema_name!r}: {exc}"
            ) from exc
        return buf.getvalue()

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        buf = io.BytesIO(data)
        try:
            record = fastavro.schemaless_reader(buf, self._parsed)
        except Exception as exc:  # corrupt input surfaces as EOFError, IndexError, Unicode...
            raise SerializationError(
                f"not valid Avro for schema {self._schema_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if buf.tell() != len(data):
            # Leftover bytes mean the writer used another schema (or another format).
            raise SerializationError(
                f"not valid Avro for schema {self._schema_name!r}: "
                f"{len(data) - buf.tell()} trailing bytes after the record"
            )
        if self._model is None:
            return record
        try:
            return self._model.model_validate(record)
        except PydanticValidationError as exc:
            raise SerializationError(describe_validation_error(self._model, exc)) from exc

    def _describe(self, exc: ValidationError) -> str:
        """``field 'a.b' expects X, got Y`` for each failing field, union branches merged."""
        by_field: dict[str, tuple[list[str], Any]] = {}
        for err in exc.errors:
            if not isinstance(err, ValidationErrorData):
                continue
            expected, _ = by_field.setdefault(self._field_path(err.field), ([], err.datum))
            expected.append(_label(err.schema))
        parts = []
        for path, (expected, datum) in by_field.items():
            got = "None (or the field is missing)" if datum is None else _preview(datum)
            where = f"field {path!r}" if path else "value"
            parts.append(f"{where} expects {' or '.join(expected)}, got {got}")
        return "; ".join(parts) or str(exc)

    def _field_path(self, field: str) -> str:
        if not field:
            return ""  # the top-level value itself
        record, _, name = field.rpartition(".")
        prefix = self._paths.get(record, record.rpartition(".")[2])
        return f"{prefix}.{name}" if prefix else name
