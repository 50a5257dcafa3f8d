"""Observability end to end: a real worker, collector and email sender on the real broker, the
sender delivering over real SMTP to a local SMTP server, a real Prometheus scraping all three,
every dashboard query evaluated against it, the alert rules loaded by it, and `polku stats`
reading the same metrics.

Plus fast checks of the metric bookkeeping itself (no broker), with the real engine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from confluent_kafka import Message, Producer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from journeys import (
    ContactPolicy,
    CustomerState,
    Engine,
    Outcome,
    bucket,
    load_journey_text,
    load_journeys,
)
from schemas import (
    Action,
    CartAbandoned,
    CartPayload,
    ContactChannel,
    CustomerRef,
    LineItem,
    NewsletterPayload,
    NewsletterSubscribed,
    OrderPlaced,
    OrderPlacedPayload,
    SourceChannel,
    Touchpoint,
    decode_action,
    encode,
)
from streams import Settings, WorkerMetrics, free_port
from streams._cli_stats import ScrapeError, default_url, funnels
from tests.deploy.grafana import RULES_DIR, panel_queries
from tests.integration.harness import (
    FAST_JOURNEYS,
    REPO_ROOT,
    PolkuProcess,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    produce,
)
from tests.streams.channels.builders import make_action
from tests.streams.channels.servers import SmtpSink

T = TypeVar("T")

TIMEOUT = 45.0
API_KEY = "observability-test-key"
ITEMS = [LineItem(sku="TRAIL-42", name="Trail shoe", unit_price="89.90")]
SIGNUP_JOURNEY = """
name: signup_fast
version: 1
description: >
  Welcome a subscriber with three emails at once, of which the policy below lets one out, defers
  one and suppresses one; an order within the hour is the conversion.
owner: observability-test
trigger:
  event: newsletter.subscribed
goal:
  event: order.placed
  within: PT1H
holdout_percent: 50
steps:
  - id: welcome_email
    type: send
    channel: email
    template: welcome_guide
    next: tips_email
  - id: tips_email
    type: send
    channel: email
    template: tips
    on_cap: defer
    next: offer_email
  - id: offer_email
    type: send
    channel: email
    template: offer
    on_cap: suppress
    next: wait_for_order
  - id: wait_for_order
    type: wait
    duration: PT1H
    next: done
  - id: done
    type: exit
"""

# Marketing allowed (no opt-in needed), no quiet hours (they depend on the wall clock), and one
# email a day per customer: the second email of an event is deferred, the third suppressed.
POLICY = """
marketing_consent: implied
quiet_hours: null
caps:
  - {channel: email, max: 1, per: P1D}
"""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- scenario ---------------------------------------------------------------------------------


def customer_in(group: str, prefix: str) -> str:
    """A customer id that signup_fast's deterministic 50% holdout puts in `group`."""
    for n in range(1_000):
        candidate = f"{prefix}-{n}"
        held_out = bucket(candidate, "signup_fast", "holdout") < 50 * 100
        if held_out == (group == "holdout"):
            return candidate
    raise AssertionError("no customer id found")


TREATED = customer_in("treated", "obs-signup")
HOLDOUT = customer_in("holdout", "obs-signup")
WAITING = customer_in("treated", "obs-waiting")

# Where the email sender finds the scenario's customers (none of their events carries an address).
# The SMTP server answers the busy mailbox with a temporary 451 every time: the sender tries it
# twice (POLKU_SENDER_MAX_ATTEMPTS=2), then the action fails and is dead-lettered.
BUSY_MAILBOX = "busy@example.com"
CONTACTS = {
    "obs-sms": {"email": "sms@example.com"},
    TREATED: {"email": "treated@example.com", "first_name": "Aino"},
    WAITING: {"email": BUSY_MAILBOX},
}
BUSY_REPLY = "451 4.2.1 Mailbox busy, try again later"


def at(minute: int) -> datetime:
    return datetime(2026, 11, 23, 12, minute, tzinfo=UTC)


def cart(customer_id: str, phone: str | None = None) -> CartAbandoned:
    return CartAbandoned(
        event_id=f"cart-{customer_id}",
        occurred_at=at(0),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer_id, phone=phone),
        payload=CartPayload(cart_id=f"c-{customer_id}", items=ITEMS),
    )


def order(customer_id: str) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"order-{customer_id}",
        occurred_at=at(5),
        channel=SourceChannel.STORE,
        customer=CustomerRef(customer_id=customer_id),
        payload=OrderPlacedPayload(
            order_id=f"o-{customer_id}", items=ITEMS, total="89.90", currency="EUR"
        ),
    )


def signup(customer_id: str) -> NewsletterSubscribed:
    return NewsletterSubscribed(
        event_id=f"signup-{customer_id}",
        occurred_at=at(1),
        channel=SourceChannel.APP,
        customer=CustomerRef(customer_id=customer_id),
        payload=NewsletterPayload(list_id="news"),
    )


def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def journeys_dir(tmp_path: Path) -> Path:
    """The fast cart journey of the fixtures, and a journey with a goal and a holdout group."""
    directory = tmp_path / "journeys"
    directory.mkdir()
    for path in FAST_JOURNEYS.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    (directory / "signup_fast.yaml").write_text(SIGNUP_JOURNEY)
    return directory


def produce_garbage(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.require_bootstrap()})
    producer.produce(settings.touchpoints_topic, key=b"obs-garbage", value=b"{not json")
    assert producer.flush(10) == 0


def post_to_collector(settings: Settings, event: Touchpoint) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{settings.collector_port}/v1/touchpoints",
        data=orjson.dumps(event.model_dump(mode="json", exclude_none=True)),
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 202


# --- processes --------------------------------------------------------------------------------


def eventually(check: Callable[[], T | None], why: str, timeout: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {why}")
        time.sleep(0.2)


def http_get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return None


@contextmanager
def process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log_path.open("ab") as log:
        child = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        yield
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)


@contextmanager
def collector(settings: Settings, log_path: Path) -> Iterator[None]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("POLKU_")}
    env |= settings.to_env()
    with process([sys.executable, "-m", "streams.cli", "collector"], log_path, env):
        health = f"http://127.0.0.1:{settings.collector_port}/healthz"
        eventually(lambda: http_get(health), "the collector to answer")
        yield


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> dict[str, Any]:
        raw = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert raw is not None, f"Prometheus did not answer {expr!r}"
        answer: dict[str, Any] = orjson.loads(raw)
        return answer

    def api(self, path: str) -> Any:
        raw = http_get(f"{self.url}{path}")
        assert raw is not None, path
        return orjson.loads(raw)["data"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(tmp_path: Path, scrape: dict[str, int]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run `make tools` (Debian package prometheus)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "*.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in scrape.items()
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    port = free_port()
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with process(args, tmp_path / "prometheus.log"):
        server = Prometheus(f"http://127.0.0.1:{port}")
        eventually(lambda: http_get(f"{server.url}/-/ready"), "Prometheus to be ready")
        yield server


# --- reading metrics --------------------------------------------------------------------------


def samples(page: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(metrics: Samples, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def scenario_done(metrics: Samples) -> bool:
    expected = {
        ("polku_journey_exits_total", "cart_fast", "completed"): 1.0,
        ("polku_journey_exits_total", "cart_fast", "exit_event"): 1.0,
        ("polku_journey_goals_total", "signup_fast", "treated"): 1.0,
        ("polku_journey_goals_total", "signup_fast", "holdout"): 1.0,
    }
    for (name, journey, label), want in expected.items():
        key = "reason" if name == "polku_journey_exits_total" else "group"
        if value(metrics, name, journey=journey, **{key: label}) != want:
            return False
    entered = value(metrics, "polku_journey_entries_total", journey="signup_fast", group="treated")
    dead = value(metrics, "polku_events_dead_lettered_total", reason="invalid_event")
    return entered == 2.0 and dead == 1.0


def partitions_of(metrics: Samples, name: str, topic: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): sample
        for (sample_name, labels), sample in metrics.items()
        if sample_name == name and dict(labels).get("topic") == topic
    }


def topic_ends(settings: Settings, at_least: int) -> dict[int, int]:
    """partition -> offset after its last record, from reading the whole topic."""
    reader = TopicReader(settings.require_bootstrap(), [settings.touchpoints_topic])
    try:
        reader.wait_for(lambda records: len(records) >= at_least, TIMEOUT, "the touchpoints")
        for _ in range(10):  # and then until a poll brings nothing new
            if not reader.poll(1.0):
                break
    finally:
        reader.close()
    ends: dict[int, int] = {}
    for message in reader.messages:
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


# --- the integration test ---------------------------------------------------------------------


@pytest.mark.integration
def test_dashboards_alerts_and_stats_on_a_real_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path / "data",
        journeys_dir(tmp_path),
        collector_api_keys=SecretStr(API_KEY),
        collector_port=free_port(),
        contact_policy_file=policy_file(tmp_path),
    )
    collector_settings = settings.model_copy(update={"metrics_port": free_port()})
    assert settings.metrics_port is not None
    assert collector_settings.metrics_port is not None
    with SmtpSink(refuse={BUSY_MAILBOX: BUSY_REPLY}) as smtp:
        sender_settings = email_sender_settings(settings, smtp.port, tmp_path)
        assert sender_settings.metrics_port is not None
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        sender = PolkuProcess(sender_settings, ["sender", "email"], tmp_path / "sender.log")
        sender.start()
        try:
            with (
                collector(collector_settings, tmp_path / "collector.log"),
                prometheus(
                    tmp_path,
                    {
                        "polku-worker": settings.metrics_port,
                        "polku-collector": collector_settings.metrics_port,
                        "polku-sender": sender_settings.metrics_port,
                    },
                ) as server,
            ):
                # the sender scraped before it delivers anything: its series are there at zero
                # (see streams/senders/_metrics.py), so its first failure is a change, not a start
                eventually(lambda: server.value(SENDER_UP), "Prometheus to scrape the sender")
                play_scenario(settings, collector_settings)
                scheduled = play_for_the_sender(settings, smtp)
                metrics = eventually(lambda: finished(worker), "the scenario to be processed")
                sent = eventually(lambda: sender_finished(sender), "the email sender to finish")
                check_deliveries(settings, smtp, sent, scheduled)
                wait_until_scraped(server)
                check_the_sender_panels(server)
                check_lag_against_the_topic(settings, worker)
                check_instances_and_actions(metrics)
                check_stats_command(settings)
                check_every_dashboard_query(server)
                check_the_alert_rules_evaluate(server)
            assert sender.stop() == 0, "the sender did not stop cleanly on SIGTERM"
        except BaseException:
            print(worker.log_tail())
            print(sender.log_tail())
            raise
        finally:
            sender.stop()
            worker.stop()


# what play_scenario writes to the touchpoints topic, and the sender's receipts (sent: the cart
# reminder, the treated welcome and the scheduled action; failed: the busy mailbox's welcome)
SCENARIO_RECORDS = 9
RECEIPTS = 4
SCHEDULED_IN = timedelta(seconds=3)
SENDER_UP = 'up{job="polku-sender"} == 1'


def play_scenario(settings: Settings, collector_settings: Settings) -> None:
    produce(
        settings,
        cart("obs-sms", phone="+358401110001"),  # email after 2 s, SMS 3 s later, completed
        cart("obs-buyer"),
        order("obs-buyer"),  # exits the cart journey: no email
        signup(TREATED),
        order(TREATED),  # a treated conversion
        signup(HOLDOUT),
        order(HOLDOUT),  # a holdout conversion
    )
    produce_garbage(settings)
    post_to_collector(collector_settings, signup(WAITING))  # stays waiting for an order


def finished(worker: WorkerProcess) -> Samples | None:
    assert worker.process is not None
    assert worker.process.poll() is None, worker.log_tail()
    page = http_get(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics")
    metrics = samples(page.decode()) if page else {}
    return metrics if scenario_done(metrics) else None


def email_sender_settings(settings: Settings, smtp_port: int, tmp_path: Path) -> Settings:
    """The worker's settings for `polku sender email`: the local SMTP server (plain SMTP on
    127.0.0.1), a contacts file, two attempts a few tenths of a second apart, its own metrics."""
    contacts = tmp_path / "contacts.json"
    contacts.write_bytes(orjson.dumps(CONTACTS))
    return settings.model_copy(
        update={
            "metrics_port": free_port(),
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_security": "none",
            "smtp_from": "Polku Shop <shop@polku.example>",
            "smtp_timeout_seconds": 10.0,
            "sender_contacts_file": contacts,
            "sender_state_dir": tmp_path / "sender-state",
            "sender_max_attempts": 2,
            "sender_backoff_initial_seconds": 0.2,
            "sender_poll_seconds": 0.2,
        }
    )


def play_for_the_sender(settings: Settings, smtp: SmtpSink) -> Action:
    """Once the sender has delivered the worker's cart reminder: that action again (a
    redelivery, as after a worker crash between producing its actions and storing its state:
    same record, same action id) and an action another system schedules a few seconds ahead
    (`not_before`)."""
    smtp.wait_for(
        lambda messages: any(message["To"] == "sms@example.com" for message in messages),
        TIMEOUT,
        "the cart reminder email",
    )
    topic = settings.action_topic(ContactChannel.EMAIL)
    reader = TopicReader(settings.require_bootstrap(), [topic])
    try:
        messages = reader.wait_for(
            lambda messages: any(is_cart_reminder(m) for m in messages), TIMEOUT, "the reminder"
        )
    finally:
        reader.close()
    [reminder] = [message for message in messages if is_cart_reminder(message)]
    scheduled = make_action(
        customer_id="email:scheduled@example.com",
        seed="obs-scheduled",
        not_before=datetime.now(UTC) + SCHEDULED_IN,
    )
    producer = Producer({"bootstrap.servers": settings.require_bootstrap()})
    partition = reminder.partition()
    assert partition is not None
    producer.produce(topic, key=reminder.key(), value=reminder.value(), partition=partition)
    producer.produce(topic, key=scheduled.customer_id.encode(), value=encode(scheduled))
    assert producer.flush(10) == 0
    return scheduled


def is_cart_reminder(message: Message) -> bool:
    action = decode_action(message.value() or b"")
    return (action.customer_id, action.step_id) == ("obs-sms", "email_reminder")


def sender_finished(sender: PolkuProcess) -> Samples | None:
    assert sender.alive(), sender.log_tail()
    page = http_get(f"http://127.0.0.1:{sender.settings.metrics_port}/metrics")
    metrics = samples(page.decode()) if page else {}
    finished = sum(
        sample
        for (name, labels), sample in metrics.items()
        if name == "polku_sender_outcomes_total" and ("channel", "email") in labels
    )
    duplicates = value(metrics, "polku_sender_duplicates_total", channel="email") or 0
    return metrics if finished >= 4 and duplicates >= 1 else None


def check_deliveries(
    settings: Settings, smtp: SmtpSink, metrics: Samples, scheduled: Action
) -> None:
    """What the SMTP server got, what was dead-lettered, and how the sender counted it."""

    def sample(name: str, **labels: str) -> float | None:
        return value(metrics, name, channel="email", **labels)

    assert sample("polku_sender_outcomes_total", outcome="sent") == 3
    assert sample("polku_sender_outcomes_total", outcome="failed") == 1  # the busy mailbox
    assert sample("polku_sender_duplicates_total") == 1  # the redelivered reminder
    delivered = Counter(message["X-Polku-Action-Id"] for message in smtp.messages)
    assert len(delivered) == 3, delivered
    assert set(delivered.values()) == {1}, f"an action was delivered twice: {delivered}"
    assert scheduled.action_id in delivered
    recipients = {message["To"] for message in smtp.messages}
    assert recipients == {"sms@example.com", "treated@example.com", "scheduled@example.com"}

    assert sample("polku_sender_attempts_total", result="ok") == 3
    assert sample("polku_sender_attempts_total", result="transient") == 2
    assert sample("polku_sender_retries_total") == 1
    assert sample("polku_sender_dead_lettered_total", kind="retries_exhausted") == 1
    assert sample("polku_sender_delivery_seconds_count") == 5
    assert (sample("polku_sender_deferred_total") or 0) >= 1  # the scheduled action

    reader = TopicReader(settings.require_bootstrap(), [settings.dead_letter_topic])
    try:
        reader.wait_for(
            lambda messages: any(map(is_retries_exhausted, messages)), TIMEOUT, "the dead letter"
        )
    finally:
        reader.close()
    [dead] = [message for message in reader.messages if is_retries_exhausted(message)]
    action = decode_action(dead.value() or b"")
    assert (action.customer_id, action.step_id) == (WAITING, "welcome_email")


def is_retries_exhausted(message: Message) -> bool:
    return dict(message.headers() or []).get("polku.error.kind") == b"retries_exhausted"


def check_lag_against_the_topic(settings: Settings, worker: WorkerProcess) -> None:
    """The worker's highwater is the topic's real end, and it has processed up to it."""
    # the scenario's records and the sender's receipts (fired timers go to the customer topic);
    # nothing more is produced
    ends = topic_ends(settings, at_least=SCENARIO_RECORDS + RECEIPTS)

    wanted = {partition: float(ends.get(partition, 0)) for partition in range(settings.partitions)}

    def caught_up() -> Samples | None:
        metrics = samples(worker.metrics())
        topic = settings.touchpoints_topic
        highwaters = partitions_of(metrics, "polku_consumer_highwater", topic)
        lags = partitions_of(metrics, "polku_consumer_lag", topic)
        behind = partitions_of(metrics, "polku_consumer_lag", settings.customer_topic)
        done = highwaters == wanted and lags == dict.fromkeys(wanted, 0.0)
        done = done and behind == dict.fromkeys(wanted, 0.0)
        return metrics if done else None

    eventually(caught_up, f"highwaters {wanted} and no lag")


def check_instances_and_actions(metrics: Samples) -> None:
    def sample(name: str, **labels: str) -> float | None:
        return value(metrics, name, **labels)

    assert sample("polku_journey_instances", journey="signup_fast", step="wait_for_order") == 1
    for step in ("wait_before_reminder", "wait_before_coupon"):
        assert sample("polku_journey_instances", journey="cart_fast", step=step) == 0
    emitted = "polku_actions_emitted_total"
    assert sample(emitted, journey="cart_fast", step="email_reminder", channel="email") == 1
    assert sample(emitted, journey="cart_fast", step="sms_coupon", channel="sms") == 1
    assert sample(emitted, journey="signup_fast", step="welcome_email", channel="email") == 2
    held_out = "polku_actions_held_out_total"
    for step in ("welcome_email", "tips_email", "offer_email"):
        assert sample(held_out, journey="signup_fast", step=step, channel="email") == 1
    policy = {"journey": "signup_fast", "channel": "email", "reason": "frequency_cap"}
    assert sample("polku_actions_deferred_total", step="tips_email", **policy) == 2
    assert sample("polku_actions_suppressed_total", step="offer_email", **policy) == 2
    attributed = "polku_journey_goals_attributed_total"
    assert sample(attributed, journey="signup_fast", step="welcome_email", channel="email") == 1
    assert sample(attributed, journey="signup_fast", step="none", channel="none") == 1
    assert sample("polku_events_total", type="order.placed", source_channel="store") == 3
    assert (sample("polku_event_to_action_seconds_count", channel="sms") or 0) == 1


def check_stats_command(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    command = [sys.executable, "-m", "streams.cli", "stats", "--url", url]
    answer = subprocess.run([*command, "--json"], capture_output=True, timeout=30, check=False)
    assert answer.returncode == 0, answer.stderr.decode()
    stats = orjson.loads(answer.stdout)
    assert stats["cart_fast"]["entered"] == {"treated": 2, "holdout": 0}
    assert stats["cart_fast"]["sent"] == {"email": 1, "sms": 1}
    assert stats["cart_fast"]["exits"] == {"completed": 1, "exit_event": 1}
    signup_stats = stats["signup_fast"]
    assert signup_stats["entered"] == {"treated": 2, "holdout": 1}
    assert signup_stats["in_progress"] == {"wait_for_order": 1}
    assert signup_stats["goals"] == {"treated": 1, "holdout": 1}
    assert signup_stats["held_out"] == {"email": 3}
    assert signup_stats["deferred"] == {"frequency_cap": 2}
    assert signup_stats["suppressed"] == {"frequency_cap": 2}
    text = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "signup_fast\n  entered            3  (holdout 1, treated 2)" in text


def wait_until_scraped(server: Prometheus) -> None:
    """Until Prometheus holds the scenario's end state and two samples of it (for rates)."""
    up = 'count(up{job=~"polku-.*"} == 1) == 3'
    eventually(lambda: server.value(up), "worker, collector and sender up")
    done = 'polku_journey_goals_total{journey="signup_fast", group="holdout"} == 1'
    eventually(lambda: server.value(f"count_over_time(({done})[1m:1s]) >= 2"), "two scrapes")
    # the sender's last counts: three sent, one failed, one duplicate
    sent = "sum(polku_sender_outcomes_total) + sum(polku_sender_duplicates_total) == 5"
    eventually(lambda: server.value(f"count_over_time(({sent})[1m:1s]) >= 2"), "two sender scrapes")


def check_the_sender_panels(server: Prometheus) -> None:
    """The Senders dashboard shows what the sender met, the first time it met it: one failure
    (after a retry), one dead letter, one duplicate, one pause for not_before."""
    queries = [query for query in panel_queries() if query.dashboard == "polku / Senders"]

    def email(panel: str, **labels: str) -> float:
        [query] = [query for query in queries if query.panel == panel]
        results = server.query(query.runnable())["data"]["result"]
        wanted = {"channel": "email"} | labels
        found = [
            float(result["value"][1])
            for result in results
            if all(result["metric"].get(key) == label for key, label in wanted.items())
        ]
        assert len(found) == 1, f"{panel} {wanted}: {results}"
        return found[0]

    assert email("Outcomes", outcome="sent") > 0
    assert email("Outcomes", outcome="failed") > 0
    assert 0 < email("Failure share") < 1
    assert email("Attempts", result="transient") > 0
    assert email("Retries") > 0
    assert email("Paused for not_before") > 0
    assert email("Delivery time") > 0
    assert round(email("Dead-lettered actions", kind="retries_exhausted")) == 1
    assert round(email("Duplicates skipped")) == 1


def check_every_dashboard_query(server: Prometheus) -> None:
    failures = []
    queries = panel_queries()
    for query in queries:
        answer = server.query(query.runnable())
        where = f"{query.dashboard} / {query.panel}: {query.expr}"
        if answer["status"] != "success":
            failures.append(f"{where}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{where}: no data")
    assert not failures, "\n".join(failures)
    assert len(queries) > 40
    journeys = server.api("/api/v1/label/journey/values?match[]=polku_journey_entries_total")
    assert {"cart_fast", "signup_fast"} <= set(journeys)  # the $journey variable's choices


def check_the_alert_rules_evaluate(server: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [rule for group in server.api("/api/v1/rules")["groups"] for rule in group["rules"]]
        done = all(not rule["lastEvaluation"].startswith("0001") for rule in rules)
        return rules if rules and done else None

    rules = eventually(evaluated, "the alert rules to be evaluated")
    assert all(rule["health"] == "ok" for rule in rules), rules
    firing = [rule["name"] for rule in rules if rule["state"] != "inactive"]
    assert firing == [], f"alerts fire on a healthy worker: {firing}"


@pytest.mark.integration
def test_a_restarted_worker_counts_its_waiting_instances_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One event before the restart, on purpose: Faust restores a changelog up to ListOffsets
    "latest", which Tansu reports short of the end when a partition's last batch holds several
    records (then a restart crashes with ConsistencyError, or an empty disk misses records).
    This test is about the gauge, so it keeps every changelog batch to one record."""
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path / "data",
        journeys_dir(tmp_path),
        contact_policy_file=policy_file(tmp_path),
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, signup(WAITING))  # waits for an order; its tips email is deferred
        eventually(lambda: waiting_and_pending(worker, (1, 2)), "the signup to be processed")
        worker.stop()
        # a new process, whose gauge starts at zero, must count the waiting instance again,
        # and not the deferred send's timer
        worker = WorkerProcess(settings, tmp_path / "worker-restarted.log").start()
        eventually(lambda: waiting_and_pending(worker, (1, 2)), "the instances to be rebuilt")
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        worker.stop()


def waiting_and_pending(worker: WorkerProcess, wanted: tuple[int, int]) -> bool | None:
    """Whether the worker reports (instances waiting for an order, pending timers) = wanted."""
    assert worker.process is not None
    assert worker.process.poll() is None, worker.log_tail()
    page = http_get(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics")
    metrics = samples(page.decode()) if page else {}
    journey, step = "signup_fast", "wait_for_order"
    waiting = value(metrics, "polku_journey_instances", journey=journey, step=step)
    pending = value(metrics, "polku_timers_pending")
    return True if (waiting, pending) == wanted else None


# --- the bookkeeping, with the real engine (no broker) ----------------------------------------


def test_instances_follow_the_customers_through_their_journeys() -> None:
    engine = Engine([*load_journeys(FAST_JOURNEYS), load_journey_text(SIGNUP_JOURNEY, "signup")])
    metrics = WorkerMetrics()
    metrics.declare_journeys(engine.journeys)
    gauge = metrics.registry.get_sample_value
    state = CustomerState(customer_id="cust-1")

    def advance(event: Touchpoint, now: datetime) -> Outcome:
        nonlocal state
        outcome = engine.advance(state, event, now)
        metrics.record_event(event, now.timestamp(), state, outcome, 0.001)
        state = outcome.state
        return outcome

    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    [timer] = advance(cart("cust-1", phone="+358401110001"), start).timers
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_reminder"})
        == 1
    )
    advance(timer.fired_event(timer.due_at), timer.due_at + timedelta(seconds=1))
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_reminder"})
        == 0
    )
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_coupon"})
        == 1
    )
    advance(order("cust-1"), start + timedelta(minutes=1))
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_coupon"})
        == 0
    )
    assert gauge("polku_journey_exits_total", {"journey": "cart_fast", "reason": "exit_event"}) == 1
    assert (
        gauge("polku_journey_steps_total", {"journey": "cart_fast", "step": "email_reminder"}) == 1
    )
    assert gauge("polku_journey_steps_total", {"journey": "cart_fast", "step": "sms_coupon"}) == 0


@pytest.mark.parametrize(
    ("policy", "metric", "reason"),
    [
        (ContactPolicy(), "polku_actions_suppressed_total", "no_consent"),
        (ContactPolicy(marketing_consent="implied"), "polku_actions_deferred_total", "quiet_hours"),
    ],
)
def test_the_contact_policy_verdicts_are_counted(
    policy: ContactPolicy, metric: str, reason: str
) -> None:
    engine = Engine([load_journey_text(SIGNUP_JOURNEY, "signup")], policy=policy)
    metrics = WorkerMetrics()
    metrics.declare_journeys(engine.journeys)
    before, event = CustomerState(customer_id=TREATED), signup(TREATED)
    at_night = datetime(2026, 11, 23, 22, tzinfo=UTC)  # in the default quiet hours
    outcome = engine.advance(before, event, at_night)
    metrics.record_event(event, None, before, outcome, 0.001)
    labels = {"journey": "signup_fast", "step": "welcome_email", "channel": "email"}
    assert metrics.registry.get_sample_value(metric, labels | {"reason": reason}) == 1
    emitted = metrics.registry.get_sample_value("polku_actions_emitted_total", labels)
    assert emitted == 0


def test_a_recovery_counts_instances_from_the_timers_but_not_deferred_sends() -> None:
    metrics = WorkerMetrics()
    metrics.declare_journeys(load_journeys(FAST_JOURNEYS))
    metrics.reset_instances({("gone_journey", "wait"): 5})  # partitions given away next
    metrics.reset_instances(
        {("cart_fast", "wait_before_coupon"): 3, ("cart_fast", "email_reminder"): 2}
    )
    gauge = metrics.registry.get_sample_value
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_coupon"})
        == 3
    )
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "wait_before_reminder"})
        == 0
    )
    assert gauge("polku_journey_instances", {"journey": "gone_journey", "step": "wait"}) == 0
    # a timer at a send step is a deferred send, not a waiting instance
    assert (
        gauge("polku_journey_instances", {"journey": "cart_fast", "step": "email_reminder"}) is None
    )


def test_stats_adds_up_workers_and_needs_a_metrics_address() -> None:
    pages = []
    for waiting in (2, 5):
        metrics = WorkerMetrics()
        metrics.entries.labels("cart_fast", "treated").inc(3)
        metrics.instances.labels("cart_fast", "wait_before_reminder").set(waiting)
        metrics.actions.labels("cart_fast", "email_reminder", "email").inc()
        pages.append(generate_latest(metrics.registry).decode())
    funnel = funnels(pages)["cart_fast"]
    assert funnel.entered == {"treated": 6}
    assert funnel.in_progress == {"wait_before_reminder": 7}
    assert funnel.sent == {"email": 2}
    with pytest.raises(ScrapeError, match="POLKU_METRICS_PORT"):
        default_url(Settings(metrics_port=None))
    local = Settings(metrics_port=9108, metrics_host="0.0.0.0")
    assert default_url(local) == "http://127.0.0.1:9108/metrics"
