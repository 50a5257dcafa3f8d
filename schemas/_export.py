"""The JSON Schema files under schemas/json/, for producers and senders in any language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from schemas._actions import Action
from schemas._journey_format import JourneyDefinition
from schemas._touchpoints import Touchpoint

JSON_SCHEMA_DIR = Path(__file__).parent / "json"
_BASE_URI = "https://polku.dev/schemas/"


def _with_id(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _BASE_URI + name} | (
        schema
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document, as generated from the models now."""
    return {
        "touchpoint.schema.json": _with_id(
            "touchpoint.schema.json", TypeAdapter(Touchpoint).json_schema(mode="validation")
        ),
        "action.schema.json": _with_id(
            "action.schema.json", Action.model_json_schema(mode="serialization")
        ),
        "journey.schema.json": _with_id(
            "journey.schema.json", JourneyDefinition.model_json_schema(mode="validation")
        ),
    }


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_json_schemas(directory: Path = JSON_SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_bytes(render(schema))
        written.append(path)
    return written
