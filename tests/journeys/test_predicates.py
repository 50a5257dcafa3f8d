"""Declarative predicates and `{{ path }}` templating, evaluated against plain JSON data."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from journeys import evaluate, render, resolve
from schemas import AllOf, AnyOf, Comparison, NotOf, Predicate

PREDICATE = TypeAdapter[Predicate](Predicate)

CONTEXT: dict[str, Any] = {
    "event": {
        "type": "order.placed",
        "channel": "store",
        "payload": {
            "total": "59.90",
            "count": 3,
            "ratio": 0.5,
            "currency": "EUR",
            "tags": ["vip", "newsletter"],
            "skus": ["SKU-1", "SKU-2"],
            "quantities": [1, "2"],
            "items": [{"sku": "SKU-1", "unit_price": "19.90"}, {"sku": "SKU-2"}],
            "note": "",
            "empty": [],
            "nothing": None,
            "gift": False,
            "paid": True,
            "weird": "nan",
            "infinite": "Infinity",
            "nested": {"a": {"b": "deep"}},
        },
    },
    "trigger": {"customer": {"phone": "+358401234567", "customer_id": "cust-1"}},
    "vars": {"step": 2},
}


def holds(predicate: dict[str, Any], context: dict[str, Any] = CONTEXT) -> bool:
    return evaluate(PREDICATE.validate_python(predicate), context)


def compare(path: str, op: str, value: Any = None) -> bool:
    return holds({"path": path, "op": op, "value": value})


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_walks_dicts_and_list_indexes() -> None:
    assert resolve("event.payload.nested.a.b", CONTEXT) == "deep"
    assert resolve("event.payload.items.0.sku", CONTEXT) == "SKU-1"
    assert resolve("event.payload.skus.1", CONTEXT) == "SKU-2"
    assert resolve("vars.step", CONTEXT) == 2


@pytest.mark.parametrize(
    "path",
    [
        "event.payload.missing",
        "event.payload.missing.deeper",
        "event.payload.skus.2",
        "event.payload.skus.first",
        "event.payload.total.digits",
        "event.payload.nothing.x",
        "nowhere",
        "vars.step.x",
    ],
)
def test_resolve_gives_none_for_missing_paths(path: str) -> None:
    assert resolve(path, CONTEXT) is None


# -- comparisons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("event.channel", "eq", "store", True),
        ("event.channel", "eq", "web", False),
        ("event.channel", "ne", "web", True),
        ("event.channel", "ne", "store", False),
        ("event.payload.count", "eq", 3, True),
        ("event.payload.count", "eq", 3.0, True),
        ("event.payload.count", "eq", "3", True),
        ("event.payload.total", "eq", 59.9, True),
        ("event.payload.total", "eq", "59.9", True),
        ("event.payload.ratio", "eq", "0.50", True),
        ("event.payload.paid", "eq", True, True),
        ("event.payload.gift", "eq", False, True),
        ("event.payload.gift", "ne", True, True),
        ("event.payload.tags", "eq", ["vip", "newsletter"], True),
        ("event.payload.nested", "eq", {"a": {"b": "deep"}}, True),
        ("event.payload.nothing", "eq", None, True),
        ("event.payload.missing", "eq", None, True),
        ("event.payload.missing", "eq", "x", False),
        ("event.payload.missing", "ne", "x", True),
    ],
)
def test_eq_and_ne(path: str, op: str, value: Any, expected: bool) -> None:
    assert compare(path, op, value) is expected


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("event.payload.total", "gt", 50, True),
        ("event.payload.total", "gt", "50", True),
        ("event.payload.total", "gt", 59.9, False),
        ("event.payload.total", "gte", 59.9, True),
        ("event.payload.total", "gte", "59.90", True),
        ("event.payload.total", "gte", 60, False),
        ("event.payload.total", "lt", 100, True),
        ("event.payload.total", "lt", "9.99", False),
        ("event.payload.total", "lte", "59.900", True),
        ("event.payload.total", "lte", 59, False),
        ("event.payload.count", "gt", 2.5, True),
        ("event.payload.count", "lt", "10", True),
        ("event.payload.ratio", "lt", 1, True),
        ("event.payload.currency", "gt", "AAA", True),
        ("event.payload.currency", "lt", "AAA", False),
        ("event.payload.currency", "lte", "EUR", True),
    ],
)
def test_ordering(path: str, op: str, value: Any, expected: bool) -> None:
    assert compare(path, op, value) is expected


def test_decimal_strings_compare_numerically_not_as_text() -> None:
    # as text "59.90" < "6" and "100" < "9"; as numbers it is the other way round
    assert compare("event.payload.total", "gt", "6")
    assert holds({"path": "vars.amount", "op": "gt", "value": 9}, {"vars": {"amount": "100"}})
    assert not holds({"path": "vars.amount", "op": "lt", "value": "9"}, {"vars": {"amount": "100"}})


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("event.channel", "in", ["web", "store"], True),
        ("event.channel", "in", ["web", "app"], False),
        ("event.payload.count", "in", ["1", "2", "3"], True),
        ("event.payload.total", "in", [59.9, 10], True),
        ("event.channel", "in", "store", False),
        ("event.channel", "in", None, False),
        ("event.channel", "in", [], False),
        ("event.payload.missing", "in", ["x"], False),
        ("event.payload.tags", "contains", "vip", True),
        ("event.payload.tags", "contains", "gold", False),
        ("event.payload.quantities", "contains", 2, True),
        ("event.payload.quantities", "contains", "1.0", True),
        ("event.payload.currency", "contains", "UR", True),
        ("event.payload.currency", "contains", "US", False),
        ("event.payload.count", "contains", 3, False),
        ("event.payload.nested", "contains", "a", False),
        ("event.payload.missing", "contains", "x", False),
        ("event.payload.currency", "contains", 1, False),
    ],
)
def test_in_and_contains(path: str, op: str, value: Any, expected: bool) -> None:
    assert compare(path, op, value) is expected


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("trigger.customer.phone", None, True),
        ("trigger.customer.email", None, False),
        ("event.payload.nothing", None, False),
        ("event.payload.note", None, False),
        ("event.payload.empty", None, False),
        ("event.payload.gift", None, True),
        ("event.payload.count", None, True),
        ("event.payload.tags", None, True),
        ("trigger.customer.phone", True, True),
        ("trigger.customer.phone", False, False),
        ("trigger.customer.email", False, True),
        ("trigger.customer.email", True, False),
    ],
)
def test_exists(path: str, value: Any, expected: bool) -> None:
    assert compare(path, "exists", value) is expected


# -- missing values and type mismatches are false, never errors ------------------------------


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte", "in", "contains", "exists"])
def test_a_missing_path_is_false(op: str) -> None:
    value: Any = ["x"] if op == "in" else 1
    assert compare("event.payload.missing", op, value) is False
    assert compare("vars.nowhere.at.all", op, value) is False


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("event.payload.currency", 5),  # text vs number
        ("event.payload.total", "abc"),  # number vs text
        ("event.payload.tags", 5),  # list vs number
        ("event.payload.nested", {"a": 1}),  # objects have no order
        ("event.payload.nested", 1),
        ("event.payload.paid", 0),  # a boolean is not a number
        ("event.payload.count", True),
        ("event.payload.nothing", None),  # nothing is not ordered
        ("event.payload.missing", None),
        ("event.payload.weird", 1),  # "nan" is text, not a number that breaks comparison
        ("event.payload.total", "nan"),
        ("event.payload.total", "snan"),
        ("event.payload.items", [{"sku": 1}]),
        ("event.payload.quantities", ["x", 1]),
    ],
)
def test_type_mismatches_are_false_not_errors(path: str, value: Any, op: str) -> None:
    assert compare(path, op, value) is False


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("event.payload.paid", 1),
        ("event.payload.gift", 0),
        ("event.payload.count", True),
        ("event.payload.paid", "1"),
        ("event.payload.paid", "true"),
        ("event.payload.count", "three"),
        ("event.payload.tags", "vip"),
    ],
)
def test_equality_across_types_is_false(path: str, value: Any) -> None:
    assert compare(path, "eq", value) is False
    assert compare(path, "ne", value) is True
    assert compare(path, "in", [value]) is False


def test_a_boolean_in_a_list_is_not_a_number() -> None:
    context: dict[str, Any] = {"vars": {"flags": [True, False], "numbers": [1, 0]}}
    assert not holds({"path": "vars.flags", "op": "contains", "value": 1}, context)
    assert not holds({"path": "vars.numbers", "op": "contains", "value": True}, context)
    assert holds({"path": "vars.flags", "op": "contains", "value": True}, context)


def test_non_numeric_special_strings_compare_as_text() -> None:
    assert compare("event.payload.weird", "eq", "nan")
    assert compare("event.payload.weird", "in", ["nan"])
    assert not compare("event.payload.weird", "eq", "NaN")
    assert compare("event.payload.infinite", "eq", "Infinity")
    assert not compare("event.payload.infinite", "gt", 10**9)


# -- combinators -----------------------------------------------------------------------------

TRUE = {"path": "event.channel", "op": "eq", "value": "store"}
FALSE = {"path": "event.channel", "op": "eq", "value": "web"}


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        ({"all": [TRUE]}, True),
        ({"all": [TRUE, TRUE]}, True),
        ({"all": [TRUE, FALSE]}, False),
        ({"any": [FALSE, TRUE]}, True),
        ({"any": [FALSE, FALSE]}, False),
        ({"not": TRUE}, False),
        ({"not": FALSE}, True),
        ({"not": {"not": TRUE}}, True),
        ({"all": [{"any": [FALSE, TRUE]}, {"not": FALSE}]}, True),
        ({"any": [{"all": [TRUE, FALSE]}, {"not": TRUE}]}, False),
        (
            {
                "all": [
                    {"path": "event.payload.total", "op": "gte", "value": 50},
                    {"path": "event.payload.currency", "op": "in", "value": ["EUR", "SEK"]},
                    {"not": {"path": "trigger.customer.email", "op": "exists"}},
                ]
            },
            True,
        ),
    ],
)
def test_combinators(predicate: dict[str, Any], expected: bool) -> None:
    assert holds(predicate) is expected


def test_combinators_parse_to_their_models() -> None:
    parsed = PREDICATE.validate_python({"all": [{"any": [TRUE]}, {"not": FALSE}]})
    assert isinstance(parsed, AllOf)
    assert isinstance(parsed.all[0], AnyOf)
    assert isinstance(parsed.all[1], NotOf)
    assert isinstance(parsed.all[1].not_, Comparison)


@pytest.mark.parametrize(
    "predicate",
    [
        {"all": []},
        {"any": []},
        {"path": "event.channel", "op": "like", "value": "s%"},
        {"path": "__import__('os')", "op": "exists"},
        {"path": "customer.phone", "op": "exists"},
        {"path": "event.channel", "op": "eq", "value": "web", "extra": 1},
        {"not": TRUE, "all": [TRUE]},
    ],
)
def test_malformed_predicates_are_rejected(predicate: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PREDICATE.validate_python(predicate)


# -- render ----------------------------------------------------------------------------------


def test_a_whole_reference_keeps_the_value_type() -> None:
    items = CONTEXT["event"]["payload"]["items"]
    assert render("{{ event.payload.items }}", CONTEXT) == items
    assert isinstance(render("{{event.payload.items}}", CONTEXT), list)
    assert render("  {{ event.payload.count }}  ", CONTEXT) == 3
    assert render("{{ event.payload.paid }}", CONTEXT) is True
    assert render("{{ event.payload.nested }}", CONTEXT) == {"a": {"b": "deep"}}
    assert render("{{ event.payload.total }}", CONTEXT) == "59.90"


def test_a_whole_reference_to_a_missing_path_is_none() -> None:
    assert render("{{ event.payload.missing }}", CONTEXT) is None


def test_references_inside_text_are_interpolated() -> None:
    rendered = render("Hi {{ trigger.customer.customer_id }}, {{event.payload.total}} EUR", CONTEXT)
    assert rendered == "Hi cust-1, 59.90 EUR"
    assert render("{{ event.channel }}/{{ vars.step }}", CONTEXT) == "store/2"


def test_a_missing_reference_inside_text_is_empty() -> None:
    assert render("cart: {{ event.payload.missing }}!", CONTEXT) == "cart: !"


def test_render_walks_lists_and_mappings_and_keeps_other_values() -> None:
    params = {
        "items": "{{ event.payload.items }}",
        "subject": "Your {{ event.payload.currency }} cart",
        "literal": "CART10",
        "percent": 10,
        "flag": False,
        "none": None,
        "nested": {"skus": ["{{ event.payload.skus.0 }}", "fixed"]},
    }
    assert render(params, CONTEXT) == {
        "items": CONTEXT["event"]["payload"]["items"],
        "subject": "Your EUR cart",
        "literal": "CART10",
        "percent": 10,
        "flag": False,
        "none": None,
        "nested": {"skus": ["SKU-1", "fixed"]},
    }


def test_render_does_not_change_its_input() -> None:
    params = {"items": "{{ event.payload.items }}", "text": "{{ event.channel }}!"}
    render(params, CONTEXT)
    assert params == {"items": "{{ event.payload.items }}", "text": "{{ event.channel }}!"}


def test_render_does_not_evaluate_anything() -> None:
    assert render("{{ 1 + 1 }}", CONTEXT) == "{{ 1 + 1 }}"
    assert render("{{ event.payload.__class__ }}", CONTEXT) is None


def test_render_writes_non_text_values_inside_text_as_json() -> None:
    context = {"event": {"flag": True, "sizes": [41, 42], "name": "Aino"}}
    rendered = render("{{ event.name }}: {{ event.flag }} {{ event.sizes }}", context)
    assert rendered == "Aino: true [41,42]"
