"""Evaluate declarative predicates and `{{ path }}` references against an event context.

The context is plain JSON data: {"event": ..., "trigger": ..., "vars": ...}. Nothing is ever
`eval`-ed; a path is a dotted walk through dicts (and list indexes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from schemas import AllOf, AnyOf, Comparison, NotOf, Predicate

_MISSING = object()
_REFERENCE = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


def resolve(path: str, context: Mapping[str, Any]) -> Any:
    """The value at a dotted path, or `None` when any part is missing."""
    value: Any = context
    for part in path.split("."):
        value = _child(value, part)
        if value is _MISSING:
            return None
    return value


def _child(value: Any, part: str) -> Any:
    if type(value) is dict:  # JSON data: the common case, without the ABC check
        return value.get(part, _MISSING)
    if isinstance(value, Mapping):
        return value.get(part, _MISSING)
    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
        return value[int(part)]
    return _MISSING


def evaluate(predicate: Predicate, context: Mapping[str, Any]) -> bool:
    if isinstance(predicate, AllOf):
        return all(evaluate(inner, context) for inner in predicate.all)
    if isinstance(predicate, AnyOf):
        return any(evaluate(inner, context) for inner in predicate.any)
    if isinstance(predicate, NotOf):
        return not evaluate(predicate.not_, context)
    # a value may itself reference the context: {path: event.payload.cart_id, op: eq,
    # value: "{{ trigger.payload.cart_id }}"}
    expected = render(predicate.value, context)
    return _compare(predicate, resolve(predicate.path, context), expected)


def _compare(comparison: Comparison, actual: Any, expected: Any) -> bool:
    match comparison.op:
        case "exists":
            present = actual is not None and actual != [] and actual != ""
            return present if expected is None else present == bool(expected)
        case "eq":
            return _equal(actual, expected)
        case "ne":
            return not _equal(actual, expected)
        case "in":
            return isinstance(expected, list) and any(_equal(actual, item) for item in expected)
        case "contains":
            return _contains(actual, expected)
        case _:
            return _order(comparison.op, actual, expected)


def _normalise(value: Any) -> Any:
    """Numbers compare as numbers, also when the event carried them as decimal strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return value
        # "nan" / "Infinity" are text here: a NaN would make ordering raise, not be false
        return number if number.is_finite() else value
    return value


def _equal(actual: Any, expected: Any) -> bool:
    """JSON equality after `_normalise`: a boolean never equals a number (true is not 1)."""
    left, right = _normalise(actual), _normalise(expected)
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return expected in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    return False


def _order(op: str, actual: Any, expected: Any) -> bool:
    left, right = _normalise(actual), _normalise(expected)
    if type(left) is not type(right) or left is None:
        return False
    try:
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Fill `{{ path }}` references in a JSON value.

    A string that is exactly one reference becomes the referenced value itself (a list of cart
    items stays a list); references inside longer text are interpolated as text.
    """
    if isinstance(value, str):
        return _render_text(value, context)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if type(value) is dict or isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    return value


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    if "{{" not in text:
        return text  # plain text: nothing to fill
    whole = _whole_reference(text)
    if whole is not None:
        return resolve(whole, context)

    def substitute(match: re.Match[str]) -> str:
        found = resolve(match.group(1), context)
        if found is None:
            return ""
        # text stays text; anything else is written as JSON (true, not Python's True)
        return found if isinstance(found, str) else orjson.dumps(found).decode()

    return _REFERENCE.sub(substitute, text)


@functools.lru_cache(maxsize=4096)
def _whole_reference(text: str) -> str | None:
    """The path when `text` is exactly one reference (journeys' texts are few: cached)."""
    whole = _REFERENCE.fullmatch(text.strip())
    return whole.group(1) if whole else None


def references(value: Any) -> list[str]:
    """Every path referenced in a JSON value, for load-time checks."""
    if isinstance(value, str):
        return _REFERENCE.findall(value)
    if isinstance(value, list):
        return [path for item in value for path in references(item)]
    if isinstance(value, Mapping):
        return [path for item in value.values() for path in references(item)]
    return []
