"""The collector's OpenAPI 3.1 description, served at /openapi.json and stored in the repo.

The event schema itself is not copied in: the request body refers to the touchpoint JSON
Schema by a relative URL that resolves both in the repository (next to this file, to
`schemas/json/touchpoint.schema.json`) and on a running collector (which serves that schema at
`/schemas/json/touchpoint.schema.json`). So a new event type needs no change here.

Regenerate the stored file after changing this module: `python -m streams._collector_openapi`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas import render

STORED_OPENAPI = Path(__file__).parent / "collector_openapi.json"
TOUCHPOINT_SCHEMA_PATH = "/schemas/json/touchpoint.schema.json"
_TOUCHPOINT_REF = ".." + TOUCHPOINT_SCHEMA_PATH

EXAMPLE_EVENT: dict[str, Any] = {
    "type": "cart.abandoned",
    "event_id": "web-8f2c",
    "occurred_at": "2026-11-23T12:00:00Z",
    "channel": "web",
    "customer": {"customer_id": "aino", "email": "aino@example.com"},
    "payload": {
        "cart_id": "c-311",
        "items": [{"sku": "TRAIL-42", "name": "Trail shoe", "quantity": 1, "unit_price": "89.90"}],
        "currency": "EUR",
        "cart_url": "https://shop.example/cart/c-311",
    },
}

_ERROR_CODES = {
    400: ("not_json, not_an_event, empty_batch", "The body is not JSON, not an event or empty."),
    401: ("unauthorized", "The X-API-Key header is missing or wrong."),
    408: ("body_too_slow", "The body did not arrive within the collector's body timeout."),
    413: ("body_too_large, batch_too_large", "The body or the batch is over its limit."),
    503: (
        "broker_unavailable",
        "The broker did not acknowledge the events in time. None was accepted: retry later "
        "with the same event ids.",
    ),
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polku collector",
            "version": "1",
            "description": (
                "POST touchpoint events (one JSON object, or a JSON array as a batch). A 202 "
                "means every event of the request is stored in Kafka; any error means none is. "
                "Validation errors name the field and the problem, never the value sent."
            ),
        },
        "paths": {
            "/v1/touchpoints": {"post": _post_touchpoints()},
            "/healthz": {"get": _get("Liveness", "The collector is up.", _HEALTH)},
            "/openapi.json": {"get": _get("This description", "OpenAPI 3.1 JSON.", {})},
            TOUCHPOINT_SCHEMA_PATH: {
                "get": _get("The touchpoint JSON Schema", "JSON Schema 2020-12.", {})
            },
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {"Accepted": _ACCEPTED, "Error": _ERROR, "InvalidEvents": _INVALID},
        },
    }


def _post_touchpoints() -> dict[str, Any]:
    event = {"$ref": _TOUCHPOINT_REF}
    responses: dict[str, Any] = {
        "202": _response("Every event is stored.", "#/components/schemas/Accepted"),
        "422": _response(
            "At least one event is invalid; the problems of each, by index in the batch (0 for "
            "a single event). None was accepted.",
            "#/components/schemas/InvalidEvents",
        ),
    }
    for status, (codes, description) in _ERROR_CODES.items():
        responses[str(status)] = _response(
            f"{description} `error`: {codes}.", "#/components/schemas/Error"
        )
    responses["503"]["headers"] = {
        "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
    }
    return {
        "summary": "Send touchpoint events",
        "operationId": "postTouchpoints",
        "security": [{"apiKey": []}],
        "requestBody": {
            "required": True,
            "description": (
                "One event, or a batch (at most POLKU_COLLECTOR_MAX_BATCH events, 500 by "
                "default; bodies of at most POLKU_COLLECTOR_MAX_BODY_BYTES, 1 MiB by default)."
            ),
            "content": {
                "application/json": {
                    "schema": {"oneOf": [event, {"type": "array", "minItems": 1, "items": event}]},
                    "examples": {
                        "one": {"value": EXAMPLE_EVENT},
                        "batch": {"value": [EXAMPLE_EVENT]},
                    },
                }
            },
        },
        "responses": dict(sorted(responses.items())),
    }


def _get(summary: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            "200": {"description": description, "content": {"application/json": {"schema": schema}}}
        },
    }


def _response(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


_HEALTH = {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer", "minimum": 1},
        "event_ids": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["accepted", "event_ids"],
    "additionalProperties": False,
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
    "additionalProperties": False,
}
_INVALID = {
    "type": "object",
    "properties": {
        "error": {"const": "invalid_events"},
        "message": {"type": "string"},
        "invalid": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "errors": {
                        "type": "array",
                        "items": {"type": "string"},
                        "examples": [
                            ["payload.items.0.quantity: Input should be greater than or equal to 1"]
                        ],
                    },
                },
                "required": ["index", "errors"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["error", "message", "invalid"],
    "additionalProperties": False,
}


def write_openapi(path: Path = STORED_OPENAPI) -> Path:
    path.write_bytes(render(openapi_document()))
    return path


if __name__ == "__main__":
    print(f"wrote {write_openapi()}")
