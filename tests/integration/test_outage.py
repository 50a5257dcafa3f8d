"""A broker outage under load: the broker process is frozen (SIGSTOP) for a while, then resumed.

While a producer sends a scenario and channels POST customers to `polku collector`, the broker
stops answering (its sockets stay open: the worst kind of outage, nothing is refused, nothing is
answered) for POLKU_OUTAGE_SECONDS (30 by default). Then:

- `polku worker`, `polku collector` and `polku sender email` are still running and reconnect;
- the worker's actions equal what the pure engine computes offline from every accepted event
  (every expected action appears, nothing unexpected, equal after dedupe on `action_id`), and
  each email is delivered once;
- during the outage the collector answers 503 with Retry-After (back-pressure), never 202;
- every event the collector answered 202 for is on the touchpoints topic and processed: a
  channel that retries its 503s with the same event ids, as the README asks, loses nothing.

The test freezes a broker of its own (a local Tansu): with POLKU_KAFKA_BOOTSTRAP pointing at an
external broker there is no process here to freeze, and the test is skipped.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from journeys import Engine, load_journeys, simulate
from schemas import (
    CustomerRef,
    Touchpoint,
    decode_action,
    decode_touchpoint,
    stable_id,
)
from streams import LocalBroker, Settings, free_port
from tests.integration.harness import (
    FAST_JOURNEYS,
    PolkuProcess,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    wait_for,
)
from tests.integration.scenarios import Paced, ScenarioProducer, abandoned_cart
from tests.streams.channels.servers import SmtpSink

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = float(os.environ.get("POLKU_OUTAGE_SECONDS", "30"))
PRODUCED_PER_SECOND = 10.0  # customers from the producer
POSTED_PER_SECOND = 4.0  # customers from a channel, through the collector
ACK_TIMEOUT = 5.0  # the collector's: how long it waits for the broker before answering 503
API_KEY = "outage-key"
TIMEOUT = 120.0  # for one step of the test to happen: a failure guard only
SETTLE_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    if os.environ.get("POLKU_KAFKA_BOOTSTRAP"):
        pytest.skip(
            "POLKU_KAFKA_BOOTSTRAP names an external broker: this test freezes the broker "
            "process, which it can do only to a local Tansu it started itself"
        )
    log = tmp_path_factory.mktemp("outage-broker") / "tansu.log"
    with LocalBroker(log_path=log) as started:
        yield started


class Frozen:
    """`with Frozen(broker):` the broker process is stopped (SIGSTOP) until the block ends."""

    def __init__(self, broker: LocalBroker) -> None:
        # LocalBroker keeps its process to itself; this test needs its pid to signal it
        process = broker._process
        assert process is not None
        assert process.poll() is None, "the broker is not running"
        self._pid = process.pid
        self.stopped_at = self.resumed_at = 0.0

    def __enter__(self) -> Frozen:
        os.kill(self._pid, signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        os.kill(self._pid, signal.SIGCONT)  # whatever happened: the broker must go on
        self.resumed_at = time.monotonic()


def _customer(source: str, n: int, start: datetime) -> list[Touchpoint]:
    """A cart; every third customer buys right after it, before the reminder is due."""
    # an identifier of one customer only: a phone shared by two would be an identity conflict
    prefix = {"kafka": "+35840", "http": "+35841"}[source]
    customer = CustomerRef(
        email=f"{source}-{n}@example.com", phone=f"{prefix}{n:07d}" if n % 2 else None
    )
    return abandoned_cart(
        f"{source}-{n}", customer, start + timedelta(milliseconds=n), buys=n % 3 == 0
    )


@dataclass
class Post:
    customer: int
    sent_at: float
    answered_at: float
    status: int
    retry_after: str | None
    event_ids: list[str]


class ChannelPoster(Paced):
    """A channel POSTing each customer's events as one batch; a 503 is retried later with the
    same event ids (after Retry-After), as the README tells channels to."""

    def __init__(self, url: str, start: datetime) -> None:
        super().__init__("poster", POSTED_PER_SECOND)
        self._url = url
        self._start = start
        self.posts: list[Post] = []
        self.accepted: dict[int, list[Touchpoint]] = {}
        self._retry: list[tuple[float, int]] = []

    def one(self, n: int) -> None:
        self._post(n)
        self._retry_due(time.monotonic())

    def finish(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self._retry:
            assert time.monotonic() < deadline, f"still refused: {self._retry[:5]}"
            self._retry_due(time.monotonic())
            time.sleep(0.2)

    def _retry_due(self, now: float) -> None:
        due = [entry for entry in self._retry if entry[0] <= now]
        self._retry = [entry for entry in self._retry if entry[0] > now]
        for _, n in due:
            self._post(n)

    def _post(self, n: int) -> None:
        events = _customer("http", n, self._start)
        body = orjson.dumps(
            [orjson.loads(event.model_dump_json(exclude_none=True)) for event in events]
        )
        request = urllib.request.Request(
            self._url,
            data=body,
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
            method="POST",
        )
        sent_at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=ACK_TIMEOUT + 30) as response:
                status, headers, answer = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, answer = error.code, error.headers, error.read()
        post = Post(
            n, sent_at, time.monotonic(), status, headers.get("Retry-After"),
            [e.event_id for e in events],
        )  # fmt: skip
        self.posts.append(post)
        if status == 202:
            assert orjson.loads(answer)["event_ids"] == post.event_ids
            self.accepted[n] = events
        elif status == 503:
            assert post.retry_after is not None, "a 503 without Retry-After"
            self._retry.append((time.monotonic() + float(post.retry_after), n))
        else:
            raise AssertionError(f"the collector answered {status}: {answer[:300]!r}")


def wait_until_healthy(port: int, collector: PolkuProcess) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert collector.alive(), collector.log_tail()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the collector never answered /healthz"
        time.sleep(0.1)


def outage_settings(bootstrap: str, tmp_path: Path, smtp_port: int) -> Settings:
    return isolated_settings(
        bootstrap,
        tmp_path / "data",
        collector_api_keys=SecretStr(API_KEY),
        collector_port=free_port(),
        collector_ack_timeout_seconds=ACK_TIMEOUT,
        sender_state_dir=tmp_path / "sender-state",
        sender_poll_seconds=0.2,
        # by design the sender exits (for its supervisor to restart it) when a receipt is not
        # acked within this time; this test is about riding out the outage, so it is longer
        sender_receipt_timeout_seconds=OUTAGE_SECONDS + 30,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_security="none",
        smtp_from="Polku Shop <shop@polku.example>",
    )


def load_through_an_outage(
    broker: LocalBroker,
    smtp: SmtpSink,
    processes: tuple[PolkuProcess, ...],
    producer: ScenarioProducer,
    poster: ChannelPoster,
) -> Frozen:
    """Traffic before, during and after a frozen broker; the threads are stopped on return."""
    try:
        producer.start()
        poster.start()
        # the whole path works before the outage: events in, actions out, emails sent
        wait_for(lambda: len(smtp.messages) > 0, "a first email", TIMEOUT, *processes)
        wait_for(lambda: any(p.status == 202 for p in poster.posts), "a 202", TIMEOUT, *processes)

        with Frozen(broker) as outage:
            time.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to wait for
            for process in processes:
                assert process.alive(), f"died during the outage:\n{process.log_tail()}"

        # after it: the collector accepts again, the producer's events get through
        wait_for(
            lambda: any(p.status == 202 and p.sent_at > outage.resumed_at for p in poster.posts),
            "a 202 after the outage",
            TIMEOUT,
            *processes,
        )
        produced_before = producer.count
        wait_for(
            lambda: producer.count > produced_before + 20, "more production", TIMEOUT, *processes
        )
    finally:
        poster.stop(TIMEOUT + ACK_TIMEOUT + 60)  # after its last 503s are retried and accepted
        producer.stop(TIMEOUT)
    return outage


def test_a_frozen_broker_loses_nothing_and_everything_reconnects(
    broker: LocalBroker, tmp_path: Path
) -> None:
    assert OUTAGE_SECONDS >= ACK_TIMEOUT + 2, "an outage shorter than this sees no 503"
    bootstrap = broker.bootstrap
    logs = tmp_path / "logs"
    logs.mkdir()
    with SmtpSink() as smtp, ExitStack() as cleanup:
        settings = outage_settings(bootstrap, tmp_path, smtp.port)
        touchpoints = TopicReader(bootstrap, [settings.touchpoints_topic])
        cleanup.callback(touchpoints.close)
        actions = TopicReader(bootstrap, list(settings.action_topics.values()))
        cleanup.callback(actions.close)
        worker = WorkerProcess(settings, logs / "worker.log")
        own_port = {"metrics_port": free_port()}
        collector = PolkuProcess(
            settings.model_copy(update=own_port), ["collector"], logs / "collector.log"
        )
        own_port = {"metrics_port": free_port()}
        sender = PolkuProcess(
            settings.model_copy(update=own_port), ["sender", "email"], logs / "sender.log"
        )
        processes = (worker, collector, sender)
        start = datetime.now(UTC)
        producer = ScenarioProducer(
            settings, PRODUCED_PER_SECOND, lambda n: _customer("kafka", n, start)
        )
        poster = ChannelPoster(f"http://127.0.0.1:{settings.collector_port}/v1/touchpoints", start)
        try:
            for process in processes:
                cleanup.callback(process.stop)
                process.start()
            wait_until_healthy(settings.collector_port, collector)
            outage = load_through_an_outage(broker, smtp, processes, producer, poster)

            events = [
                *producer.events,
                *(e for n in sorted(poster.accepted) for e in poster.accepted[n]),
            ]
            assert producer.delivered == len(producer.events)
            engine = Engine(load_journeys(FAST_JOURNEYS))
            expected = {a.action_id: a for a in simulate(engine, events).actions}
            actions.wait_for(
                lambda ms: {decode_action(m.value() or b"").action_id for m in ms} >= set(expected),
                SETTLE_TIMEOUT,
                f"all {len(expected)} expected actions",
            )
            emails = {i for i, a in expected.items() if a.channel == "email"}
            smtp.wait_for(
                lambda ms: {m["X-Polku-Action-Id"] for m in ms} >= emails,
                SETTLE_TIMEOUT,
                f"all {len(emails)} emails",
            )
            accepted_ids = {e.event_id for e in events}
            touchpoints.wait_for(
                lambda ms: (
                    {decode_touchpoint(m.value() or b"").event_id for m in ms} >= accepted_ids
                ),
                TIMEOUT,
                "every accepted event on the touchpoints topic",
            )
            actions.poll(2.0)
            touchpoints.poll(1.0)
            for process in processes:
                assert process.alive(), f"exited after the outage:\n{process.log_tail()}"
        except BaseException:
            for process in processes:
                print(process.log_tail())
            raise
        delivered = Counter(str(m["X-Polku-Action-Id"]) for m in smtp.messages)

    emitted = [decode_action(m.value() or b"").action_id for m in actions.messages]
    assert set(emitted) == set(expected), f"unexpected: {sorted(set(emitted) - set(expected))[:5]}"
    assert delivered == dict.fromkeys(emails, 1), "each email once, no other"
    # nothing but the accepted events reached the topic (a 503'd batch may have, and then
    # its retry brought the same events again: same ids), and the sender's receipts
    on_topic = [decode_touchpoint(m.value() or b"") for m in touchpoints.messages]
    assert {e.event_id for e in on_topic if e.type != "message.receipt"} == accepted_ids
    receipts = {e.event_id for e in on_topic if e.type == "message.receipt"}
    assert receipts == {f"receipt-{stable_id(i, 'sent')}" for i in emails}, "a receipt per email"

    during = [
        p
        for p in poster.posts
        if outage.stopped_at < p.sent_at and p.answered_at < outage.resumed_at
    ]
    assert during, "no request was answered during the outage"
    assert {p.status for p in during} == {503}, "during the outage the collector answers 503 only"
    refused = sum(p.status == 503 for p in poster.posts)
    print(
        f"outage of {OUTAGE_SECONDS:.0f}s: {len(expected)} actions, "
        f"{len(emitted) - len(set(emitted))} duplicates deduped by action_id, "
        f"{len(emails)} emails; {producer.count} produced and {len(poster.accepted)} posted "
        f"customers, {refused} answers 503 ({len(during)} during the outage)"
    )
