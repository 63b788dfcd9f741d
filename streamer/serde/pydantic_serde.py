"""JSON serde for a pydantic model: values are model instances, bytes are their JSON."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from streamer.errors import SerializationError
from streamer.serde.builtin import _preview

M = TypeVar("M", bound=BaseModel)


_MAX_FIELDS = 5
_MAX_LOC = 100


def describe_validation_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line naming ``model`` and each failing field by dotted location.

    e.g. ``not a valid Order: amount: Input should be a valid number``; errors about the
    whole value (bad JSON, not an object) have no location and show just the message.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    # A hostile record can fail on every one of 100,000 list items: name the first few only,
    # so the log line and the dead letter's reason header stay short.
    for err in errors[:_MAX_FIELDS]:
        loc = ".".join(str(part) for part in err["loc"])[:_MAX_LOC]
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    if len(errors) > _MAX_FIELDS:
        parts.append(f"and {len(errors) - _MAX_FIELDS} more errors")
    return f"not a valid {model.__name__}: " + "; ".join(parts)


class PydanticSerde(Generic[M]):
    """Encodes instances of ``model_cls`` as JSON; decodes JSON into validated instances.

    ``serialize`` also accepts a dict, validated through the model first so that only data
    the model accepts reaches the topic. ``None`` <-> ``None``.
    """

    __slots__ = ("_model", "name")
    name: str

    def __init__(self, model_cls: type[M]) -> None:
        self._model = model_cls
        self.name = f"pydantic:{model_cls.__qualname__}"

    @property
    def model(self) -> type[M]:
        """The model class this serde produces."""
        return self._model

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        instance: BaseModel
        if isinstance(value, self._model):
            instance = value
        elif isinstance(value, dict):
            try:
                instance = self._model.model_validate(value)
            except ValidationError as exc:
                raise SerializationError(describe_validation_error(self._model, exc)) from exc
        else:
            raise SerializationError(
                f"expected a {self._model.__name__} (or a dict of its fields), "
                f"got {type(value).__name__} {_preview(value)}"
            )
        try:
            return instance.model_dump_json().encode("utf-8")
        except PydanticSerializationError as exc:  # a field holds an unserializable object
            raise SerializationError(f"cannot encode {self._model.__name__}: {exc}") from exc

    def deserialize(self, data: bytes | None) -> M | None:
        if data is None:
            return None
        try:
            # model_validate_json parses and validates in one pass in Rust (no dict detour).
            return self._model.model_validate_json(data)
        except ValidationError as exc:
            raise SerializationError(describe_validation_error(self._model, exc)) from exc
