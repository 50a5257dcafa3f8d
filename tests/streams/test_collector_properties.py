"""Property tests of the HTTP collector: whatever a channel sends, the answer is a 4xx naming the
problem (or a 202 for a valid event), never a 5xx, and the next good event is accepted.

The unit here is the HTTP service, not the validation function alone: the collector app is
served by aiohttp on 127.0.0.1 as `polku collector` serves it, and requests go over a real socket,
so HTTP framing, body limits, content encodings and header bytes are exercised too. The broker
is not: the publisher is a stand-in that encodes what it is given, as the Kafka publisher does
(a broker's absence is tested in tests/streams/channels/test_collector.py and
tests/integration/test_outage.py). The decoder's own properties are in tests/schemas.

The expected answer of every body comes from a model of the README's table (size, JSON, object
or array, batch size, then each event through the decoder the worker uses), so the collector
accepts exactly what the worker can decode, and what it accepts survives encoding unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import http.client
import logging
import re
import socket
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from schemas import (
    EVENT_TYPES,
    InvalidEventError,
    Touchpoint,
    decode_touchpoint,
    encode,
    touchpoint_from_dict,
)
from streams import Settings, build_collector_app, free_port
from streams._collector import API_KEY_HEADER, TOUCHPOINTS_PATH

KEY = "property-key"
MAX_BODY = 16 * 1024
MAX_BATCH = 5
# marks every generated value that could be personal data: no error answer may contain it
MARK = "zqPII"
EXAMPLES_PER_TEST = settings(
    max_examples=100,
    deadline=None,  # an HTTP round trip on a busy CI machine: no deadline, it is not a speed test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EXAMPLES: dict[str, dict[str, Any]] = {
    "cart.updated": {"cart_id": "c-1", "items": [{"sku": "TENT", "name": "Tent"}]},
    "cart.abandoned": {
        "cart_id": "c-1",
        "items": [{"sku": "TRAIL", "name": "Trail shoe", "quantity": 2, "unit_price": "89.90"}],
        "currency": "EUR",
        "cart_url": "https://shop.example/cart/c-1",
    },
    "product.viewed": {"sku": "SKU-1", "name": "Trail shoe", "price": "89.90"},
    "order.placed": {
        "order_id": "o-1",
        "items": [{"sku": "TENT", "name": "Tent", "quantity": 1, "unit_price": "49.90"}],
        "total": "49.90",
        "currency": "EUR",
    },
    "store.visited": {"store_id": "hki-1", "detected_by": "wifi_login"},
    "delivery.status": {"order_id": "o-1", "status": "shipped", "carrier": "Posti"},
    "return.created": {
        "order_id": "o-1",
        "return_id": "r-1",
        "items": [{"sku": "STOVE", "name": "Stove"}],
        "reason": "too heavy",
    },
    "review.posted": {"review_id": "rv-1", "rating": 5, "site": "shop", "text": "Great"},
    "newsletter.subscribed": {"list_id": "hiking", "source": "instagram"},
    "consent.changed": {"channel": "sms", "purpose": "marketing", "granted": True},
    "message.receipt": {"action_id": "a-1", "channel": "email", "status": "delivered"},
    "stock.watch": {"sku": "SKU-1", "size": "38"},
    "stock.available": {"sku": "SKU-1", "size": "38", "store_id": "hki-1", "quantity": 2},
    "hotel.checked_out": {
        "stay_id": "st-1",
        "hotel_id": "levi-1",
        "check_in": "2026-03-26T14:00:00Z",
        "check_out": "2026-03-28T09:00:00+02:00",
        "nights": 2,
    },
    "event.registered": {"event_ref": "fair", "name": "Fair", "starts_at": "2026-04-01T07:00:00Z"},
    "event.attended": {"event_ref": "fair", "name": "Fair", "starts_at": "2026-04-01T07:00:00Z"},
    "churn.risk": {"score": 0.91, "model": "churn-v3"},
    "customer.erased": {"reference": "gdpr-1"},
    "timer.fired": {
        "timer_id": "t-1",
        "journey": "abandoned_cart",
        "journey_version": 1,
        "instance_id": "i-1",
        "step_id": "wait",
        "due_at": "2026-03-02T11:00:00Z",
    },
}


def example(event_type: str, event_id: str = "ev-1") -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": event_id,
        "occurred_at": "2026-03-02T10:00:00Z",
        "channel": "web",
        "customer": {"customer_id": "aino", "email": "aino@example.com"},
        "payload": copy.deepcopy(EXAMPLES[event_type]),
    }


def test_the_examples_cover_every_event_type_and_are_valid() -> None:
    assert sorted(EXAMPLES) == sorted(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        touchpoint_from_dict(example(event_type))


# --- the collector, served on 127.0.0.1 ---------------------------------------------------


class EncodingPublisher:
    """Stands in for the Kafka publisher: keeps what it would produce, `encode(event)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[bytes] = []

    async def publish(self, events: Sequence[Touchpoint]) -> None:
        encoded = [encode(event) for event in events]
        with self._lock:
            self._records.extend(encoded)

    async def close(self) -> None:
        return None

    @property
    def records(self) -> list[bytes]:
        with self._lock:
            return list(self._records)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def document(self) -> Any:
        return orjson.loads(self.body)


class ServerErrors(logging.Handler):
    """aiohttp's server-side errors, kept unformatted while the server runs.

    Formatting a traceback parses source with `ast`, and CPython 3.11 raises SystemError when two
    threads do that at once (here: the server thread logging, and pytest reporting a failure);
    pytest then aborts the whole session. So the server thread only stores the records, and the
    test thread formats them when it reports a 5xx.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def formatted(self, last: int = 3) -> str:
        return "\n".join(logging.Formatter().format(record) for record in self.records[-last:])


@dataclass
class ServedCollector:
    """`polku collector`'s app on a free port of 127.0.0.1, in a thread with its own loop."""

    publisher: EncodingPublisher = field(default_factory=EncodingPublisher)
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    errors: ServerErrors = field(default_factory=ServerErrors)

    def __enter__(self) -> ServedCollector:
        server_log = logging.getLogger("aiohttp.server")
        server_log.addHandler(self.errors)
        server_log.propagate = False
        settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # never used: the publisher stands in
            collector_api_keys=SecretStr(KEY),
            collector_max_body_bytes=MAX_BODY,
            collector_max_batch=MAX_BATCH,
        )
        self._runner = web.AppRunner(build_collector_app(settings, self.publisher))
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            assert self._runner is not None
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="collector", daemon=True)
        self._thread.start()
        assert started.wait(30), "the collector did not start"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        assert self._thread is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        server_log = logging.getLogger("aiohttp.server")
        server_log.removeHandler(self.errors)
        server_log.propagate = True

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, *, chunked: bool = False
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {API_KEY_HEADER: KEY, "Content-Type": "application/json"} | (headers or {})
            if chunked:
                chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
                connection.request(
                    "POST", TOUCHPOINTS_PATH, body=chunks, headers=sent, encode_chunked=True
                )
            else:
                connection.request("POST", TOUCHPOINTS_PATH, body=body, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def raw(self, head: bytes, body: bytes) -> int:
        """Send a hand-built request (any header bytes); the status of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head + b"\r\n\r\n" + body)
            received = b""
            while b"\r\n" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        status_line = received.split(b"\r\n", 1)[0]
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) .*", status_line)
        assert match is not None, f"not an HTTP answer: {received[:200]!r}"
        return int(match.group(1))


@pytest.fixture(scope="module")
def collector() -> Iterator[ServedCollector]:
    with ServedCollector() as served:
        yield served


# --- what the answer must be ----------------------------------------------------------------


@dataclass
class Expected:
    status: int
    error: str | None = None
    invalid: list[int] = field(default_factory=list)
    events: list[Touchpoint] = field(default_factory=list)


def expected_answer(body: bytes) -> Expected:
    """The README's table, with the worker's own decoder as the judge of each event."""
    if len(body) > MAX_BODY:
        return Expected(413, "body_too_large")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Expected(400, "not_json")
    if isinstance(document, dict):
        documents = [document]
    elif not isinstance(document, list):
        return Expected(400, "not_an_event")
    elif not document:
        return Expected(400, "empty_batch")
    elif len(document) > MAX_BATCH:
        return Expected(413, "batch_too_large")
    else:
        documents = document
    events: list[Touchpoint] = []
    invalid: list[int] = []
    for index, item in enumerate(documents):
        try:
            events.append(touchpoint_from_dict(item))
        except InvalidEventError:
            invalid.append(index)
    if invalid:
        return Expected(422, "invalid_events", invalid=invalid)
    return Expected(202, events=events)


# "location: message"; a location may hold any text, as it names the unknown keys sent
PROBLEM = re.compile(r"^.*: \S.*$", re.DOTALL)


def check(collector: ServedCollector, body: bytes, answer: Answer) -> None:
    """The answer is the expected one, says why in JSON, and echoes no value sent."""
    assert answer.status < 500, (answer.status, collector.errors.formatted())
    assert answer.headers.get("Content-Type", "").startswith("application/json")
    document = answer.document()
    want = expected_answer(body)
    assert (answer.status, document.get("error")) == (want.status, want.error), document
    if answer.status == 202:
        assert document == {
            "accepted": len(want.events),
            "event_ids": [e.event_id for e in want.events],
        }
        return
    assert set(document) == {"error", "message"} | ({"invalid"} if answer.status == 422 else set())
    assert isinstance(document["message"], str)
    assert document["message"]
    # pydantic names the value of the discriminator in its message ("Input tag 'x' found
    # using 'type'"), which tests/streams/channels/test_collector.py expects; nothing else
    unechoed = re.sub(rb"Input tag '.*?' found using 'type'", b"", answer.body)
    assert MARK.encode() not in unechoed, f"a value sent is echoed: {document}"
    if answer.status == 422:
        assert [item["index"] for item in document["invalid"]] == want.invalid
        for item in document["invalid"]:
            assert set(item) == {"index", "errors"}
            assert item["errors"]
            assert all(PROBLEM.match(problem) for problem in item["errors"]), item


def post_and_check(collector: ServedCollector, body: bytes, **headers: str) -> Answer:
    """POST `body`, check the answer and that exactly its accepted events were published,
    then check that a good event is accepted right after it."""
    before = len(collector.publisher.records)
    answer = collector.post(body, headers)
    if currently_in_test_context():
        event(f"answered {answer.status}")  # --hypothesis-show-statistics shows the mix
    check(collector, body, answer)
    published = collector.publisher.records[before:]
    want = expected_answer(body)
    # what the worker will decode from the topic is what the collector validated
    assert [decode_touchpoint(record) for record in published] == want.events
    good = example("store.visited", event_id=f"good-{uuid.uuid4().hex}")
    after = collector.post(orjson.dumps(good))
    assert (after.status, after.document()) == (
        202,
        {"accepted": 1, "event_ids": [good["event_id"]]},
    )
    return answer


# --- strategies -------------------------------------------------------------------------------

MARKED_TEXT = st.text(max_size=12).map(lambda text: MARK + text)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | MARKED_TEXT
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
EARLIEST, LATEST = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999_999)
DATETIMES = st.datetimes(EARLIEST, LATEST) | st.datetimes(
    EARLIEST, LATEST, timezones=st.just(UTC) | OFFSETS
)
TIMESTAMPS = st.one_of(
    DATETIMES.map(datetime.isoformat),
    DATETIMES.map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
    DATETIMES.map(lambda moment: moment.isoformat(sep=" ")),
    st.dates().map(str),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "2026-02-30T10:00:00Z",
            "2026-03-02T24:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-03-02T10:00:00+24:00",
            "-0001-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-W10-1T10:00:00Z",
            "2026-03-02t10:00:00z",
            "2026-03-02T10:00:00.1234567890123Z",
            "\uff12\uff10\uff12\uff16-03-02T10:00:00Z",  # full-width digits
            "",
            "now",
        ]
    ),
)
VALUES = st.one_of(
    JSON,
    TIMESTAMPS,
    MARKED_TEXT,
    st.text(min_size=250, max_size=300),  # around the 256-character identifier limit
    st.sampled_from([0, -1, 2**63, 2**64 - 1, -(2**63), 1e308, "NaN", "Infinity", "-0", "1e400"]),
)
EXTRA_KEYS = st.sampled_from(["extra", "Type", "", "payload", "\u0000", "\u202etype"])


def _paths(document: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every place in a document: each key of each object and each item of each list."""
    if not isinstance(document, dict | list):
        return
    children: Any = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in children:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _parent(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A valid event of any type, then up to three changes: a value replaced (wrong types,
    odd times, unicode, marked personal data), a field removed, an unknown field added."""
    document = example(draw(st.sampled_from(sorted(EVENT_TYPES))), draw(MARKED_TEXT))
    customer_field = draw(st.sampled_from(["customer_id", "email", "loyalty_card", "phone"]))
    document["customer"] = {customer_field: draw(MARKED_TEXT)}
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        path = draw(st.sampled_from(list(_paths(document))))
        parent = _parent(document, path)
        change = draw(st.sampled_from(["replace", "remove", "add"]))
        if change == "replace":
            parent[path[-1]] = draw(VALUES)
        elif change == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(EXTRA_KEYS)] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return document


# --- the properties ---------------------------------------------------------------------------


@EXAMPLES_PER_TEST
@given(st.binary(max_size=2_000))
def test_random_bytes(collector: ServedCollector, body: bytes) -> None:
    post_and_check(collector, body)


@EXAMPLES_PER_TEST
@given(JSON | st.lists(st.dictionaries(st.text(max_size=8), JSON, max_size=6), max_size=8))
def test_random_json(collector: ServedCollector, document: Any) -> None:
    post_and_check(collector, orjson.dumps(document))


@EXAMPLES_PER_TEST
@given(events())
def test_one_event_with_wrong_types_unknown_fields_and_odd_values(
    collector: ServedCollector, document: Any
) -> None:
    post_and_check(collector, orjson.dumps(document))


@EXAMPLES_PER_TEST
@given(st.lists(events(), min_size=1, max_size=MAX_BATCH + 2))
def test_batches_are_judged_whole_and_every_invalid_index_is_named(
    collector: ServedCollector, documents: list[Any]
) -> None:
    post_and_check(collector, orjson.dumps(documents))


@EXAMPLES_PER_TEST
@given(
    st.sampled_from(sorted(EVENT_TYPES)),
    TIMESTAMPS,
    st.sampled_from(["occurred_at", "check_in", "check_out", "starts_at", "due_at"]),
)
def test_naive_far_and_malformed_times(
    collector: ServedCollector, event_type: str, moment: Any, name: str
) -> None:
    document = example(event_type)
    if name in document["payload"]:
        document["payload"][name] = moment
    else:
        document["occurred_at"] = moment
    answer = post_and_check(collector, orjson.dumps(document))
    if isinstance(moment, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", moment):
        assert answer.status == 422, "a time without a time zone is never accepted"


@EXAMPLES_PER_TEST
@given(
    st.text(max_size=20) | st.text(min_size=250, max_size=300),
    st.sampled_from(["event_id", "customer_id", "name"]),
)
def test_unicode_in_identifiers_and_names(collector: ServedCollector, text: str, name: str) -> None:
    document = example("product.viewed")
    if name == "event_id":
        document["event_id"] = text
    elif name == "customer_id":
        document["customer"] = {"customer_id": text}
    else:
        document["payload"]["name"] = text
    answer = post_and_check(collector, orjson.dumps(document))
    assert (answer.status == 202) == (name == "name" or 1 <= len(text) <= 256)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xef\xbb\xbf" + orjson.dumps(example("stock.watch")), id="utf-8 BOM"),
        pytest.param(b'{"type": "stock.watch", "event_id": "\\ud800"}', id="lone surrogate"),
        pytest.param(b'{"type": "stock.watch", "event_id": "\xc0\xaf"}', id="overlong UTF-8"),
        pytest.param(b'{"type": "stock.watch", "event_id": "\xff"}', id="not UTF-8"),
        pytest.param(orjson.dumps(example("stock.watch")).decode().encode("utf-16"), id="UTF-16"),
        pytest.param(b"[" * 5_000 + b"]" * 5_000, id="nesting beyond the parser's depth"),
        pytest.param(b'{"type": "stock.watch", "type": "cart.updated"}', id="duplicate keys"),
        pytest.param(b"123456789012345678901234567890", id="integer beyond 64 bits"),
        pytest.param(orjson.dumps(example("stock.watch") | {"event_id": "a\u0000b"}), id="NUL"),
        pytest.param(
            orjson.dumps(example("stock.watch") | {"event_id": "\u202ereverse\u200d\U0001f600"}),
            id="bidi override, joiner, emoji",
        ),
        pytest.param(
            orjson.dumps(example("stock.watch") | {"event_id": "e\u0301" * 128}),
            id="256 characters, 128 of them combining",
        ),
        pytest.param(
            orjson.dumps(example("stock.watch") | {"event_id": "\U0001f600" * 257}),
            id="257 astral characters",
        ),
    ],
)
def test_unicode_and_parser_edge_cases(collector: ServedCollector, body: bytes) -> None:
    post_and_check(collector, body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=MAX_BODY - 64, max_value=MAX_BODY + 64) | st.just(5 * 1024 * 1024),
    st.booleans(),
)
def test_the_body_limit_holds_with_and_without_content_length(
    collector: ServedCollector, size: int, chunked: bool
) -> None:
    document = example("review.posted")
    document["payload"]["text"] = ""
    filler = size - len(orjson.dumps(document))
    document["payload"]["text"] = "x" * max(filler, 0)  # over 10,000 characters: invalid
    body = orjson.dumps(document)
    before = len(collector.publisher.records)
    answer = collector.post(body, chunked=chunked)
    check(collector, body, answer)
    assert (answer.status == 413) == (len(body) > MAX_BODY)
    assert collector.publisher.records[before:] == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_read_and_bombs_and_garbage_refused(
    collector: ServedCollector, encoding: str
) -> None:
    def compress(data: bytes) -> bytes:
        return gzip.compress(data) if encoding == "gzip" else zlib.compress(data)

    good = orjson.dumps(example("cart.updated", event_id="compressed-1"))
    bomb = compress(b" " * (50 * MAX_BODY))  # small on the wire, over the limit once inflated
    assert len(bomb) < MAX_BODY
    answers = {
        name: collector.post(body, {"Content-Encoding": encoding})
        for name, body in [("good", compress(good)), ("bomb", bomb), ("garbage", b"\x00" * 64)]
    }
    statuses = {name: (answer.status, answer.body[:200]) for name, answer in answers.items()}
    assert {name: status for name, (status, _) in statuses.items()} == {
        "good": 202,
        "bomb": 413,
        "garbage": 400,
    }, statuses
    assert answers["bomb"].document()["error"] == "body_too_large"
    assert answers["garbage"].document()["error"] == "not_json"
    post_and_check(collector, good)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(min_size=0, max_size=40).filter(lambda key: not set(key) & set(b"\r\n\x00")),
    st.sampled_from([b"application/json", b"text/plain", b"multipart/form-data", b"\xff\xfe"]),
)
def test_header_bytes_never_make_a_5xx(
    collector: ServedCollector, key: bytes, content_type: bytes
) -> None:
    body = orjson.dumps(example("stock.watch", event_id="header-1"))
    head = b"\r\n".join(
        [
            b"POST " + TOUCHPOINTS_PATH.encode() + b" HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Connection: close",
            b"X-API-Key: " + key,
            b"Content-Type: " + content_type,
            b"Content-Length: " + str(len(body)).encode(),
        ]
    )
    status = collector.raw(head, body)
    assert status < 500, collector.errors.formatted()
    # HTTP trims the blanks around a header value; then only the exact key is accepted
    assert status in ((202,) if key.strip(b" \t") == KEY.encode() else (400, 401))
