"""The collector's HTTP contract: statuses, exact errors, limits, keys, and its OpenAPI document.

The publisher is a recording stand-in here (the real one is tested on a real broker in
tests/integration/test_channels.py), except for the 503 test, which uses the real Kafka
publisher against a port where no broker listens.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr, TypeAdapter, ValidationError

from schemas import Touchpoint, describe_validation_error, json_schemas, render
from streams import BrokerError, ConfigError, Settings, build_collector_app, free_port
from streams._collector import (
    API_KEY_HEADER,
    TOUCHPOINTS_PATH,
    CollectorMetrics,
    validation_problems,
)
from streams._collector_openapi import EXAMPLE_EVENT, STORED_OPENAPI, openapi_document

Client = TestClient[web.Request, web.Application]
KEY = "k-123"
AUTH = {API_KEY_HEADER: KEY}


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[list[Touchpoint]] = []
        self.broker_away = False

    async def publish(self, events: Sequence[Touchpoint]) -> None:
        if self.broker_away:
            raise BrokerError("no ack from the broker within 1.0s")
        self.published.append(list(events))

    async def close(self) -> None:
        return None


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "collector_api_keys": SecretStr(f"old-key, {KEY}"),
        "collector_max_batch": 3,
        "collector_max_body_bytes": 4096,
        "collector_ack_timeout_seconds": 1.0,
        "collector_body_timeout_seconds": 1.0,
    }
    return Settings(**(values | overrides))


def event(event_id: str = "web-1", **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(EXAMPLE_EVENT) | {"event_id": event_id}
    return document | changes


class Collector:
    def __init__(self, client: Client, publisher: RecordingPublisher, metrics: CollectorMetrics):
        self.client = client
        self.publisher = publisher
        self.metrics = metrics

    async def post(
        self, body: bytes | Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await self.client.post(
            TOUCHPOINTS_PATH, data=data, headers=AUTH if headers is None else headers
        )
        return response.status, orjson.loads(await response.read())


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[Collector]:
    publisher = RecordingPublisher()
    metrics = CollectorMetrics()
    app = build_collector_app(_settings(), publisher, metrics)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Collector(client, publisher, metrics)


@pytest.mark.asyncio
async def test_one_event_is_accepted_with_its_id(collector: Collector) -> None:
    status, body = await collector.post(event("web-1"))
    assert (status, body) == (202, {"accepted": 1, "event_ids": ["web-1"]})
    [[published]] = collector.publisher.published
    assert published.event_id == "web-1"
    assert published.customer.key == "aino"


@pytest.mark.asyncio
async def test_a_batch_is_accepted_whole(collector: Collector) -> None:
    status, body = await collector.post([event("a"), event("b"), event("c")])
    assert (status, body) == (202, {"accepted": 3, "event_ids": ["a", "b", "c"]})
    assert [e.event_id for e in collector.publisher.published[0]] == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_one_invalid_event_rejects_the_batch_with_every_problem_by_index(
    collector: Collector,
) -> None:
    bad_item = event("b")
    bad_item["payload"]["items"][0]["quantity"] = 0
    naive_time = event("c", occurred_at="2026-11-23T12:00:00")
    status, body = await collector.post([event("a"), bad_item, naive_time])

    assert status == 422
    assert body == {
        "error": "invalid_events",
        "message": "2 of 3 events are invalid; none was accepted",
        "invalid": [
            {
                "index": 1,
                "errors": [
                    "cart.abandoned.payload.items.0.quantity: "
                    "Input should be greater than or equal to 1"
                ],
            },
            {"index": 2, "errors": ["cart.abandoned.occurred_at: Input should have timezone info"]},
        ],
    }
    assert collector.publisher.published == []


@pytest.mark.asyncio
async def test_validation_errors_never_echo_personal_data(collector: Collector) -> None:
    customer = {"email": "aino.secret@", "phone": "0401110001", "customer_id": ""}
    status, body = await collector.post(event(customer=customer))
    assert status == 422
    text = orjson.dumps(body).decode()
    assert "aino.secret" not in text
    assert "0401110001" not in text
    assert "cart.abandoned.customer.email: String should match pattern" in text
    assert "cart.abandoned.customer.phone: String should match pattern" in text
    assert "cart.abandoned.customer.customer_id: String should have at least 1 character" in text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"type": "nope", "event_id": "x"}, "(root): Input tag 'nope' found using 'type'"),
        ({"event_id": "x"}, "(root): Unable to extract tag using discriminator 'type'"),
        (
            event(extra_field=1),
            "cart.abandoned.extra_field: Extra inputs are not permitted",
        ),
        (
            event(customer={}),
            "cart.abandoned.customer: Value error, customer needs at least one identifier",
        ),
    ],
)
async def test_each_kind_of_invalid_event_is_named(
    collector: Collector, body: Any, problem: str
) -> None:
    status, answer = await collector.post(body)
    assert status == 422
    [invalid] = answer["invalid"]
    assert invalid["index"] == 0
    assert any(error.startswith(problem) for error in invalid["errors"]), invalid


def test_problems_are_worded_as_describe_validation_error_words_them() -> None:
    with pytest.raises(ValidationError) as raised:
        TypeAdapter(Touchpoint).validate_python(event(occurred_at="yesterday", customer={}))
    assert "; ".join(validation_problems(raised.value)) == describe_validation_error(raised.value)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "error", "message"),
    [
        (b'{"type": ', 400, "not_json", "the body is not JSON: unexpected end of data"),
        (b"", 400, "not_json", "the body is not JSON: Input is a zero-length"),
        (b'"cart.abandoned"', 400, "not_an_event", "the body must be a JSON object"),
        (b"[]", 400, "empty_batch", "the batch holds no event"),
        (
            orjson.dumps([event("a")] * 4),
            413,
            "batch_too_large",
            "the batch holds 4 events; the limit is 3",
        ),
        (
            orjson.dumps(event(padding="x" * 5000)),
            413,
            "body_too_large",
            "the body exceeds the limit of 4096 bytes",
        ),
    ],
)
async def test_malformed_bodies_get_precise_errors_and_publish_nothing(
    collector: Collector, body: bytes, status: int, error: str, message: str
) -> None:
    got_status, answer = await collector.post(body)
    assert got_status == status
    assert answer["error"] == error
    assert answer["message"].startswith(message)
    assert collector.publisher.published == []


@pytest.mark.asyncio
@pytest.mark.parametrize("headers", [{}, {API_KEY_HEADER: "wrong"}, {API_KEY_HEADER: ""}])
async def test_without_the_api_key_nothing_is_read(
    collector: Collector, headers: dict[str, str]
) -> None:
    status, answer = await collector.post(event(), headers=headers)
    assert (status, answer["error"]) == (401, "unauthorized")
    assert collector.publisher.published == []


@pytest.mark.asyncio
async def test_every_listed_key_is_accepted_during_a_rotation(collector: Collector) -> None:
    status, _ = await collector.post(event(), headers={API_KEY_HEADER: "old-key"})
    assert status == 202


@pytest.mark.asyncio
async def test_an_unavailable_broker_is_503_with_retry_after(collector: Collector) -> None:
    collector.publisher.broker_away = True
    response = await collector.client.post(
        TOUCHPOINTS_PATH, data=orjson.dumps(event()), headers=AUTH
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    answer = orjson.loads(await response.read())
    assert answer["error"] == "broker_unavailable"
    assert "none was accepted" in answer["message"]


@pytest.mark.asyncio
async def test_the_real_publisher_answers_503_when_no_broker_listens() -> None:
    # a real producer against a closed port: librdkafka gives up after the ack timeout
    app = build_collector_app(_settings(collector_ack_timeout_seconds=1.0))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post(TOUCHPOINTS_PATH, data=orjson.dumps(event()), headers=AUTH)
        assert response.status == 503
        assert (await response.json())["error"] == "broker_unavailable"


@pytest.mark.asyncio
async def test_requests_are_counted_by_status_only(collector: Collector) -> None:
    await collector.post(event())
    await collector.post(b"{")
    await collector.post(event(), headers={})
    registry = collector.metrics.registry
    for status in ("202", "400", "401"):
        assert registry.get_sample_value("polku_collector_requests_total", {"status": status}) == 1
    assert registry.get_sample_value("polku_collector_events_total", {"result": "accepted"}) == 1


async def trickle(client: Client) -> tuple[int, bytes]:
    """POST the first byte of a 100-byte body, then nothing: the status line and the body."""
    assert client.server.host is not None
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        head = (
            f"POST {TOUCHPOINTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{API_KEY_HEADER}: {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        writer.write(head.encode())
        await writer.drain()
        # the collector's body timeout is 1 s; far longer than that means it waits for ever
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            answer = await reader.read(4096)
        return int(status_line.split()[1]), answer
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_a_body_that_trickles_in_is_cut_off_with_408(collector: Collector) -> None:
    started = asyncio.get_running_loop().time()
    status, answer = await trickle(collector.client)
    waited = asyncio.get_running_loop().time() - started
    assert status == 408
    assert b'"error":"body_too_slow"' in answer
    assert waited >= 1.0  # cut off by the body timeout, not refused at once
    assert collector.publisher.published == []


@pytest.mark.asyncio
async def test_healthz(collector: Collector) -> None:
    response = await collector.client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


def test_the_collector_needs_an_api_key() -> None:
    with pytest.raises(ConfigError, match="POLKU_COLLECTOR_API_KEYS is not set"):
        build_collector_app(_settings(collector_api_keys=None), RecordingPublisher())
    with pytest.raises(ConfigError, match="POLKU_COLLECTOR_API_KEYS"):
        build_collector_app(_settings(collector_api_keys=SecretStr(" , ")), RecordingPublisher())


# --- the OpenAPI description --------------------------------------------------------------


def test_the_stored_openapi_file_is_the_generated_one() -> None:
    assert STORED_OPENAPI.read_bytes() == render(openapi_document()), (
        "streams/collector_openapi.json is stale: run `python -m streams._collector_openapi`"
    )


@pytest.mark.asyncio
async def test_the_server_serves_the_stored_description_and_the_schema_it_refers_to(
    collector: Collector,
) -> None:
    served = await (await collector.client.get("/openapi.json")).json()
    assert served == orjson.loads(STORED_OPENAPI.read_bytes())
    ref = served["paths"]["/v1/touchpoints"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["oneOf"][0]["$ref"]
    # relative to /openapi.json on the server, and to streams/ in the repository
    schema = await (await collector.client.get(ref.removeprefix(".."))).json()
    assert schema == json_schemas()["touchpoint.schema.json"]
    assert (STORED_OPENAPI.parent / ref).resolve().name == "touchpoint.schema.json"
    assert (STORED_OPENAPI.parent / ref).resolve().is_file()


@pytest.mark.asyncio
async def test_the_described_paths_are_the_routes_served(collector: Collector) -> None:
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in collector.client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert described == routes


def test_the_described_examples_are_valid_events() -> None:
    content = openapi_document()["paths"]["/v1/touchpoints"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    TypeAdapter(Touchpoint).validate_python(examples["one"]["value"])
    TypeAdapter(list[Touchpoint]).validate_python(examples["batch"]["value"])


@pytest.mark.asyncio
async def test_the_described_statuses_are_the_ones_the_collector_answers(
    collector: Collector,
) -> None:
    answered = set()
    for body, headers in [
        (event(), AUTH),
        (b"{", AUTH),
        (event(), {}),
        (orjson.dumps([event()] * 4), AUTH),
        (event(customer={}), AUTH),
    ]:
        answered.add((await collector.post(body, headers))[0])
    answered.add((await trickle(collector.client))[0])
    collector.publisher.broker_away = True
    answered.add((await collector.post(event()))[0])

    responses = openapi_document()["paths"]["/v1/touchpoints"]["post"]["responses"]
    assert {int(status) for status in responses} == answered
