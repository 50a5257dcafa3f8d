"""`polku collector`: channels POST touchpoints over HTTP; polku validates and produces them.

The answer tells the truth about the events: 202 only once the broker has acked every event of
the request, 503 (nothing accepted, retry with the same event ids) when it did not in time. A
request is all or nothing: one invalid event rejects the batch with every problem listed by
index, so a channel fixes and resends it whole. Bodies are never logged or echoed back (they
carry personal data); validation messages name the field, never its value.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from pydantic import TypeAdapter, ValidationError

from schemas import PolkuError, Touchpoint, json_schemas
from streams._collector_openapi import TOUCHPOINT_SCHEMA_PATH, openapi_document
from streams._errors import BrokerError, ConfigError
from streams._producer import TouchpointProducer
from streams._settings import Settings

log = logging.getLogger("polku.collector")

API_KEY_HEADER = "X-API-Key"
TOUCHPOINTS_PATH = "/v1/touchpoints"
_TOUCHPOINT = TypeAdapter[Touchpoint](Touchpoint)
_MAX_IN_FLIGHT = 50_000  # below librdkafka's queue size: beyond it, answer 503 before producing
_ACK_MARGIN_SECONDS = 1.0
_RETRY_AFTER_SECONDS = "5"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CollectorMetrics:
    """Requests by HTTP status and events by result; no label ever holds request data."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "polku_collector_requests_total",
            "HTTP requests answered, by status code",
            ["status"],
            registry=self.registry,
        )
        self.events = Counter(
            "polku_collector_events_total",
            "Events in POSTed bodies, by result (accepted, invalid, unavailable)",
            ["result"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "polku_collector_request_seconds",
            "Time to answer a request, including waiting for the broker's acks",
            registry=self.registry,
        )


class TouchpointPublisher(Protocol):
    async def publish(self, events: Sequence[Touchpoint]) -> None:
        """Return once the broker has every event; raise `BrokerError` otherwise."""

    async def close(self) -> None: ...


class KafkaPublisher:
    """Produce a request's events and wait for all their acks, within the ack timeout.

    librdkafka gives up on an event after the same timeout, so an event this answered 503 for
    is not silently written later (a retry with the same event ids is then the only copy).

    A producer that failed to deliver is replaced by a new one for the next requests. After
    timed-out records librdkafka's idempotent producer bumps its epoch, and Tansu answers that
    producer PRODUCER_FENCED for every record from then on: without a new producer the
    collector would answer 503 for good after a broker outage. On any broker a new producer
    costs only a new connection.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.collector_ack_timeout_seconds
        self._producer = self._new_producer()
        self._retiring: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> TouchpointProducer:
        return TouchpointProducer(self._settings, message_timeout_seconds=self._timeout)

    async def publish(self, events: Sequence[Touchpoint]) -> None:
        producer = self._producer
        if producer.in_flight + len(events) > _MAX_IN_FLIGHT:
            raise BrokerError(f"{producer.in_flight} events already wait for the broker")
        acks = [asyncio.wrap_future(producer.submit(event)) for event in events]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*acks, return_exceptions=True),
                self._timeout + _ACK_MARGIN_SECONDS,
            )
        except TimeoutError:
            self._replace(producer)
            raise BrokerError(f"no ack from the broker within {self._timeout}s") from None
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            self._replace(producer)
            if isinstance(failures[0], BrokerError):
                raise failures[0]
            raise BrokerError(f"the broker did not take the events: {failures[0]}")

    def _replace(self, failed: TouchpointProducer) -> None:
        """Use a new producer from now on; close the failed one once its records are settled."""
        if failed is not self._producer:
            return  # a request that failed at the same time replaced it already
        log.warning("a delivery failed: the next requests use a new producer")
        self._producer = self._new_producer()
        retiring = asyncio.create_task(self._close(failed))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._retiring)
        await self._close(self._producer)

    @staticmethod
    async def _close(producer: TouchpointProducer) -> None:
        try:
            await asyncio.to_thread(producer.close)
        except BrokerError as exc:
            log.warning("closing the producer: %s", exc)


class RejectedError(PolkuError):
    """A request polku does not accept: becomes a JSON error answer with this status."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.document = {"error": error, "message": message} | (extra or {})
        self.headers = headers or {}

    def response(self) -> web.Response:
        return _json(self.status, self.document, headers=self.headers)


class Collector:
    """The request handling, independent of how events reach Kafka (see `TouchpointPublisher`)."""

    def __init__(
        self, settings: Settings, publisher: TouchpointPublisher, metrics: CollectorMetrics
    ) -> None:
        self._keys = _required_keys(settings)
        self._max_body = settings.collector_max_body_bytes
        self._max_batch = settings.collector_max_batch
        self._body_timeout = settings.collector_body_timeout_seconds
        self._publisher = publisher
        self._metrics = metrics
        self._openapi = orjson.dumps(openapi_document())
        self._touchpoint_schema = orjson.dumps(json_schemas()["touchpoint.schema.json"])

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._observe])
        app.router.add_post(TOUCHPOINTS_PATH, self.post_touchpoints)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get(TOUCHPOINT_SCHEMA_PATH, self.touchpoint_schema)
        app.on_cleanup.append(self._close)
        return app

    async def post_touchpoints(self, request: web.Request) -> web.Response:
        self._authorize(request)
        documents = self._batch(_parse(await self._read(request)))
        events = self._validate(documents)
        await self._publish(events)
        self._metrics.events.labels("accepted").inc(len(events))
        return _json(202, {"accepted": len(events), "event_ids": [e.event_id for e in events]})

    async def healthz(self, _: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def touchpoint_schema(self, _: web.Request) -> web.Response:
        return web.Response(body=self._touchpoint_schema, content_type="application/schema+json")

    def _authorize(self, request: web.Request) -> None:
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding them back the
        # same way gives the bytes as sent, so a key that is not UTF-8 is a wrong key, not a 500
        given = request.headers.get(API_KEY_HEADER, "").encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:  # compare with all of them: timing tells nothing about which
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise RejectedError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")

    async def _read(self, request: web.Request) -> bytes:
        too_large = RejectedError(
            413, "body_too_large", f"the body exceeds the limit of {self._max_body} bytes"
        )
        if request.content_length is not None and request.content_length > self._max_body:
            raise too_large
        try:
            # a client that trickles its body would hold a connection and a task for ever
            async with asyncio.timeout(self._body_timeout):
                return await request.read()
        except TimeoutError:
            raise RejectedError(
                408, "body_too_slow", f"the body did not arrive within {self._body_timeout:g}s"
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except web.RequestPayloadError:
            # e.g. a body that is not in the Content-Encoding it names: no JSON can be read
            raise RejectedError(
                400, "not_json", "the body is not JSON: it cannot be decoded as it was sent"
            ) from None

    def _batch(self, document: Any) -> list[Any]:
        if isinstance(document, dict):
            return [document]
        if not isinstance(document, list):
            raise RejectedError(
                400, "not_an_event", "the body must be a JSON object (one event) or an array"
            )
        if not document:
            raise RejectedError(400, "empty_batch", "the batch holds no event")
        if len(document) > self._max_batch:
            raise RejectedError(
                413,
                "batch_too_large",
                f"the batch holds {len(document)} events; the limit is {self._max_batch}",
            )
        return document

    def _validate(self, documents: list[Any]) -> list[Touchpoint]:
        events: list[Touchpoint] = []
        invalid: list[dict[str, Any]] = []
        for index, document in enumerate(documents):
            try:
                events.append(_TOUCHPOINT.validate_python(document))
            except ValidationError as exc:
                invalid.append({"index": index, "errors": validation_problems(exc)})
        if invalid:
            self._metrics.events.labels("invalid").inc(len(documents))
            raise RejectedError(
                422,
                "invalid_events",
                f"{len(invalid)} of {len(documents)} events are invalid; none was accepted",
                extra={"invalid": invalid},
            )
        return events

    async def _publish(self, events: list[Touchpoint]) -> None:
        try:
            await self._publisher.publish(events)
        except BrokerError as exc:
            log.warning("%d events not accepted: %s", len(events), exc)
            self._metrics.events.labels("unavailable").inc(len(events))
            raise RejectedError(
                503,
                "broker_unavailable",
                "the events could not be stored; none was accepted: retry later with the "
                "same event ids",
                headers={"Retry-After": _RETRY_AFTER_SECONDS},
            ) from None

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except RejectedError as rejection:
            response = rejection.response()
        except web.HTTPException as exc:  # aiohttp's own 404 / 405
            self._metrics.requests.labels(str(exc.status)).inc()
            raise
        finally:
            self._metrics.seconds.observe(time.perf_counter() - started)
        self._metrics.requests.labels(str(response.status)).inc()
        return response

    async def _close(self, _: web.Application) -> None:
        await self._publisher.close()


def _required_keys(settings: Settings) -> list[bytes]:
    keys = settings.collector_keys()
    if not keys:
        raise ConfigError(
            "POLKU_COLLECTOR_API_KEYS is not set: the collector accepts no anonymous events"
        )
    return keys


def validation_problems(exc: ValidationError) -> list[str]:
    """`location: message` per problem, as `describe_validation_error` words them (no input)."""
    return [
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, not the content
        raise RejectedError(400, "not_json", f"the body is not JSON: {exc}") from None


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(document), content_type="application/json", headers=headers
    )


def build_collector_app(
    settings: Settings,
    publisher: TouchpointPublisher | None = None,
    metrics: CollectorMetrics | None = None,
) -> web.Application:
    _required_keys(settings)  # before a producer is made for nothing
    publisher = publisher or KafkaPublisher(settings)
    return Collector(settings, publisher, metrics or CollectorMetrics()).app()


def run_collector(settings: Settings) -> int:
    """Serve until SIGTERM / SIGINT; in-flight requests finish, the producer is flushed."""
    metrics = CollectorMetrics()
    app = build_collector_app(settings, metrics=metrics)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, settings.metrics_host, metrics.registry)
    log.info("collector on http://%s:%d", settings.collector_host, settings.collector_port)
    web.run_app(
        app,
        host=settings.collector_host,
        port=settings.collector_port,
        print=None,
        shutdown_timeout=settings.collector_ack_timeout_seconds + 5,
    )
    return 0
