"""orjson codecs: bytes on the wire to validated models and back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas._actions import Action
from schemas._errors import InvalidEventError
from schemas._touchpoints import Touchpoint

_TOUCHPOINT = TypeAdapter[Touchpoint](Touchpoint)
# the adapter's validator itself: `TypeAdapter.validate_python` only adds argument checks
_validate_touchpoint: Callable[[Any], Touchpoint] = _TOUCHPOINT.validator.validate_python


def encode(model: BaseModel) -> bytes:
    """Serialise any polku model to compact JSON bytes.

    pydantic-core writes the JSON itself: the same bytes as `orjson.dumps` of the JSON-mode
    dump, without building that dump first.
    """
    return model.__pydantic_serializer__.to_json(model, by_alias=True, exclude_none=True)


def touchpoint_data(event: Touchpoint) -> dict[str, Any]:
    """The touchpoint as JSON data (no `None` fields): what journeys' paths and `seen` read."""
    # `model_dump(mode="json", exclude_none=True)` without its Python wrapper
    data: dict[str, Any] = event.__pydantic_serializer__.to_python(
        event, mode="json", exclude_none=True
    )
    return data


def decode_touchpoint(raw: bytes) -> Touchpoint:
    """Parse and validate one touchpoint, or raise `InvalidEventError` with reason and bytes."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"not JSON: {exc}", raw) from None
    return touchpoint_from_dict(document, raw)


def touchpoint_from_dict(document: Any, raw: bytes = b"") -> Touchpoint:
    try:
        return _validate_touchpoint(document)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc), raw) from None


def decode_action(raw: bytes) -> Action:
    return Action.model_validate_json(raw)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: `location: message`, the input itself never echoed (it may be PII)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "(root)"
        problems.append(f"{location}: {error['msg']}")
    return "; ".join(problems)
