"""Models built from values the engine made itself, without pydantic's validation.

The engine builds pydantic models per event (the timer a wait arms, a send's pending verdict)
out of values that are already valid: fields of validated
models, strings it formatted itself, the time it was given, each already in the form validation
would give it. Validating them again cost about a tenth of `advance`. What these helpers build
is indistinguishable from the validated model: the same field values in the same order (which
is the order pydantic-core writes them in), defaults filled in the same way, and the same
`model_fields_set`.

Only the caller knows its values are valid: a value from outside the engine goes through
`model_validate` as before, so that bad input still fails where it did.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_Model = TypeVar("_Model", bound=BaseModel)

# A time with its offset, in the state's msgspec structs (pydantic's `AwareDatetime`): decoding
# a stored time without one fails.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
_new = object.__new__  # what a model class's __new__ is: pydantic does not override it
# The four attributes every model instance has, set through their descriptors: a seventh
# cheaper than `object.__setattr__`, which looks each name up on every call.
_SLOTS = vars(BaseModel)
_set_dict: Callable[[BaseModel, dict[str, Any]], None] = _SLOTS["__dict__"].__set__
_set_fields_set: Callable[[BaseModel, set[str]], None] = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra: Callable[[BaseModel, None], None] = _SLOTS["__pydantic_extra__"].__set__
_set_private: Callable[[BaseModel, None], None] = _SLOTS["__pydantic_private__"].__set__


class Builder(Generic[_Model]):
    """Builds a `model` from a mapping of field values, with or without validation.

    For models without extra fields, private attributes, validators or defaults that depend on
    other fields: `_check` refuses any other, so a model that grows one fails at import.
    """

    def __init__(self, model: type[_Model]) -> None:
        _check(model)
        self._model = model
        # `model.model_validate` without its Python wrapper
        self.validated: Callable[[dict[str, Any]], _Model] = (
            model.__pydantic_validator__.validate_python
        )
        # required fields hold a placeholder that every caller overrides
        self._template: dict[str, Any] = {
            name: None if field.default is PydanticUndefined else field.default
            for name, field in model.model_fields.items()
        }
        factories: list[tuple[str, Callable[[], Any]]] = []
        for name, field in model.model_fields.items():
            factory = field.default_factory
            if factory is not None:
                factories.append((name, factory))  # type: ignore[arg-type]
        self._factories = tuple(factories)

    def unchecked(self, values: dict[str, Any]) -> _Model:
        """What `validated(values)` returns when `values` are valid, at about half its cost."""
        fields = self._template | values
        for name, factory in self._factories:
            if name not in values:
                fields[name] = factory()
        built = _new(self._model)
        _set_dict(built, fields)
        _set_fields_set(built, set(values))
        _set_extra(built, None)
        _set_private(built, None)
        return built


def _check(model: type[BaseModel]) -> None:
    config, fields = model.model_config, model.model_fields.values()
    problems = [
        "extra fields" if config.get("extra") == "allow" else "",
        "private attributes" if model.__private_attributes__ else "",
        "validators" if model.__pydantic_decorators__.model_validators else "",
        "validators" if model.__pydantic_decorators__.field_validators else "",
        "a post-init hook" if model.__pydantic_post_init__ else "",
        "dependent defaults" if any(f.default_factory_takes_validated_data for f in fields) else "",
        # validation gives each model its own copy of those; the template would share them
        "mutable defaults" if any(not _hashable(f.default) for f in fields) else "",
        "validated defaults"
        if config.get("validate_default") or any(f.validate_default for f in fields)
        else "",
    ]
    found = sorted({problem for problem in problems if problem})
    if found:
        raise TypeError(f"{model.__name__} has {', '.join(found)}: build it with validation")


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def copied_with(model: _Model, update: dict[str, Any]) -> _Model:
    """`model.model_copy(update=update)` at a third of its cost, for models `Builder` can
    build: the same shallow copy, with `update`'s fields counted as set."""
    return new_model(
        model.__class__, model.__dict__ | update, model.__pydantic_fields_set__ | update.keys()
    )


def new_model(model: type[_Model], fields: dict[str, Any], fields_set: set[str]) -> _Model:
    """A `model` holding `fields` (all of its fields, in order), without validation."""
    built = _new(model)
    _set_dict(built, fields)
    _set_fields_set(built, fields_set)
    _set_extra(built, None)
    _set_private(built, None)
    return built


def is_aware(moment: object) -> bool:
    """Would pydantic take `moment` as an `AwareDatetime` as it is?

    Every time the engine stores derives from the `now` it was given, so a run refuses a `now`
    that fails this (`Run`), and builds its models and structs without checking their times.
    """
    return isinstance(moment, datetime) and moment.utcoffset() is not None
