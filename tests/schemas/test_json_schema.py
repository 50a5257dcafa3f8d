"""The exported JSON Schema files are the contract for non-Python producers and senders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import EVENT_TYPES, JSON_SCHEMA_DIR, json_schemas, render, write_json_schemas

REGENERATE = "schemas/json is stale: run `make schemas` (python -m schemas) and commit the result"


def schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json_schemas()[name]
    return document


def resolve_ref(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/$defs/"), ref
    found: dict[str, Any] = document["$defs"][ref.removeprefix("#/$defs/")]
    return found


def test_the_expected_schema_files_are_generated() -> None:
    assert sorted(json_schemas()) == [
        "action.schema.json",
        "journey.schema.json",
        "touchpoint.schema.json",
    ]


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_file_is_up_to_date(name: str) -> None:
    path = JSON_SCHEMA_DIR / name
    assert path.is_file(), f"{path} is missing: {REGENERATE}"
    assert path.read_bytes() == render(json_schemas()[name]), f"{path}: {REGENERATE}"


def test_no_stray_files_in_the_schema_directory() -> None:
    present = sorted(path.name for path in JSON_SCHEMA_DIR.glob("*.json"))
    assert present == sorted(json_schemas()), f"unexpected files in {JSON_SCHEMA_DIR}"


def test_write_json_schemas_writes_what_render_renders(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path / "out")
    assert sorted(path.name for path in written) == sorted(json_schemas())
    for path in written:
        assert path.read_bytes() == render(json_schemas()[path.name])


def test_render_is_stable_sorted_indented_json() -> None:
    rendered = render({"b": 1, "a": [1, 2]})
    assert rendered == b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert orjson.loads(rendered) == {"a": [1, 2], "b": 1}


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_every_schema_declares_its_dialect_and_id(name: str) -> None:
    document = schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"].endswith("/" + name)


def test_touchpoint_discriminator_lists_every_event_type() -> None:
    document = schema("touchpoint.schema.json")
    discriminator = document["discriminator"]
    assert discriminator["propertyName"] == "type"
    assert sorted(discriminator["mapping"]) == sorted(EVENT_TYPES)
    variants = sorted(variant["$ref"] for variant in document["oneOf"])
    assert variants == sorted(discriminator["mapping"].values())


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_touchpoint_variant_pins_and_requires_its_type(event_type: str) -> None:
    document = schema("touchpoint.schema.json")
    variant = resolve_ref(document, document["discriminator"]["mapping"][event_type])
    assert variant["properties"]["type"]["const"] == event_type
    # `discriminator` is an OpenAPI keyword that plain JSON Schema validators ignore, so a
    # variant must itself require `type`, or a producer's validator would accept an event
    # without one that polku then dead-letters
    assert "type" in variant["required"]
    for field in ("event_id", "occurred_at", "channel", "customer", "payload"):
        assert field in variant["required"]
    assert variant["additionalProperties"] is False


def test_touchpoint_schema_has_the_envelope_constraints() -> None:
    document = schema("touchpoint.schema.json")
    customer = document["$defs"]["CustomerRef"]
    assert customer["additionalProperties"] is False
    phone = customer["properties"]["phone"]["anyOf"][0]
    assert phone["pattern"] == r"^\+[1-9][0-9]{6,14}$"
    channels = document["$defs"]["SourceChannel"]["enum"]
    assert {"web", "app", "store", "system"} <= set(channels)


def test_action_schema_requires_the_dedupe_id() -> None:
    document = schema("action.schema.json")
    assert "action_id" in document["required"]
    assert document["properties"]["action_id"]["pattern"] == "^[0-9a-f]{32}$"
    assert document["additionalProperties"] is False


def test_journey_schema_lists_the_known_event_types_for_triggers() -> None:
    document = schema("journey.schema.json")
    trigger = document["$defs"]["Trigger"]
    assert trigger["properties"]["event"]["enum"] == list(EVENT_TYPES)
    assert {"wait", "send", "branch", "exit"} <= {
        resolve_ref(document, variant["$ref"])["properties"]["type"]["const"]
        for variant in document["properties"]["steps"]["items"]["oneOf"]
    }
