"""`polku demo`: a local broker, a real worker process and a scripted multi-customer scenario.

The abandoned-cart journey runs with its waits cut to seconds. Four customers abandon carts;
what happens next depends on what they do, and every action is printed as the worker emits it.
The demo checks the outcome against what the journey promises and exits non-zero if it differs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from schemas import (
    Action,
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    SourceChannel,
    Touchpoint,
    decode_action,
)
from streams._producer import TouchpointProducer
from streams._settings import Settings
from streams._topics import ensure_topics, run_scoped
from streams.broker import broker_bootstrap

DEMO_JOURNEYS = Path(__file__).parent / "demo"
DEMO_POLICY = Path(__file__).parent / "policies" / "demo.yaml"
_TRUNCATED_EVENT = b'{"type": "cart.abandoned", "event_id": "pos-17", "customer": '

# (customer, channel, template) the scenario must produce, no more and no fewer
EXPECTED_ACTIONS = Counter(
    {
        ("aino", "email", "cart_reminder"): 1,
        ("aino", "sms", "cart_coupon"): 1,
        ("chen", "email", "cart_reminder"): 1,
        ("dana", "email", "cart_reminder"): 1,
    }
)
EXPECTED_DEAD_LETTERS = 1


def _items(*names: str) -> list[LineItem]:
    return [
        LineItem(sku=name.upper().replace(" ", "-"), name=name, unit_price="49.90")
        for name in names
    ]


def _cart(customer: CustomerRef, event_id: str, *names: str) -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=datetime.now(UTC),
        channel=SourceChannel.WEB,
        customer=customer,
        payload=CartPayload(
            cart_id=f"cart-{event_id}",
            items=_items(*names),
            currency="EUR",
            cart_url=f"https://shop.example/cart/{event_id}",
        ),
    )


def _order(
    customer: CustomerRef, event_id: str, channel: SourceChannel, *names: str
) -> OrderPlaced:
    return OrderPlaced(
        event_id=event_id,
        occurred_at=datetime.now(UTC),
        channel=channel,
        customer=customer,
        payload=OrderPlacedPayload(
            order_id=f"order-{event_id}",
            items=_items(*names),
            total="49.90",
            currency="EUR",
        ),
    )


AINO = CustomerRef(customer_id="aino", email="aino@example.com", phone="+358401110001")
BERTIL = CustomerRef(customer_id="bertil", email="bertil@example.com", phone="+46701110002")
CHEN = CustomerRef(customer_id="chen", email="chen@example.com")
DANA = CustomerRef(customer_id="dana", email="dana@example.com", phone="+4791110004")

OPENING: list[tuple[str, Touchpoint]] = [
    ("Aino leaves trail shoes in her cart", _cart(AINO, "web-1", "Trail shoe", "Merino socks")),
    ("Bertil leaves a rain jacket in his cart", _cart(BERTIL, "web-2", "Rain jacket")),
    (
        "...and buys it in the app a moment later",
        _order(BERTIL, "app-3", SourceChannel.APP, "Rain jacket"),
    ),
    ("Chen (no phone number known) leaves a tent", _cart(CHEN, "web-4", "Tent")),
    ("Dana leaves a backpack in her cart", _cart(DANA, "web-5", "Backpack")),
]


@dataclass
class _Timeline:
    started: float = field(default_factory=time.monotonic)

    def say(self, arrow: str, text: str) -> None:
        print(f"  {time.monotonic() - self.started:6.1f}s  {arrow} {text}", flush=True)


def _describe(action: Action) -> str:
    items = action.params.get("items")
    named = (
        ", ".join(str(i["name"]) for i in items if isinstance(i, dict))
        if isinstance(items, list)
        else ""
    )
    extra = f" items: {named}" if named else ""
    if "coupon_code" in action.params:
        extra = f" coupon {action.params['coupon_code']} (-{action.params['discount_percent']}%)"
    return (
        f"{action.channel.value:<5} to {action.customer_id:<6} {action.template:<14}"
        f" [{action.journey}/{action.step_id}]{extra}  id {action.action_id[:12]}…"
    )


def run_demo(base: Settings, timeout_seconds: float = 90.0) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="polku-demo-"))
    print("polku demo: the abandoned-cart journey, waits cut to 3 s and 4 s", flush=True)
    with broker_bootstrap(base.kafka_bootstrap, log_path=workdir / "broker.log") as bootstrap:
        where = "external broker" if base.kafka_bootstrap else "local Tansu broker"
        print(f"polku demo: {where} at {bootstrap}", flush=True)
        settings = _demo_settings(base, bootstrap, workdir)
        ensure_topics(settings)
        worker = _start_worker(settings, workdir / "worker.log")
        try:
            return _play(settings, worker, timeout_seconds)
        finally:
            _stop(worker)
            print(f"polku demo: worker stopped; logs in {workdir}", flush=True)


def _demo_settings(base: Settings, bootstrap: str, workdir: Path) -> Settings:
    run = f"polku-demo-{uuid.uuid4().hex[:6]}"
    return base.model_copy(
        update=run_scoped(run)
        | {
            "kafka_bootstrap": bootstrap,
            "data_dir": workdir / "data",
            "journeys_dir": DEMO_JOURNEYS,
            "contact_policy_file": DEMO_POLICY,
            "metrics_port": None,
            "log_level": "warn",
        }
    )


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLKU_")} | settings.to_env()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    print(f"polku demo: worker started (pid {process.pid}), log {log_path}", flush=True)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _play(settings: Settings, worker: subprocess.Popen[bytes], timeout_seconds: float) -> int:
    timeline = _Timeline()
    producer = TouchpointProducer(settings)
    reader = _reader(settings)
    try:
        for story, event in OPENING:
            producer.send(event)
            timeline.say("→", f"{event.type:<15} {event.channel.value:<5} {story}")
        producer.send_raw(b"pos-17", _TRUNCATED_EVENT)
        timeline.say("→", "a POS till sends a truncated event (it must be dead-lettered)")
        producer.flush()
        actions, dead = _watch(settings, reader, producer, timeline, worker, timeout_seconds)
    finally:
        reader.close()
        producer.close()
    return _verdict(actions, dead)


def _reader(settings: Settings) -> Consumer:
    consumer = Consumer(settings.kafka_client_config() | {"group.id": f"{settings.app_id}-view"})
    topics = [*settings.action_topics.values(), settings.dead_letter_topic]
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in metadata[t].partitions])
    return consumer


def _watch(
    settings: Settings,
    reader: Consumer,
    producer: TouchpointProducer,
    timeline: _Timeline,
    worker: subprocess.Popen[bytes],
    timeout_seconds: float,
) -> tuple[Counter[tuple[str, str, str]], int]:
    actions: Counter[tuple[str, str, str]] = Counter()
    dead = 0
    reactions = _reactions(producer, timeline)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and (actions != EXPECTED_ACTIONS or dead < 1):
        if worker.poll() is not None:
            timeline.say("!", f"the worker exited with code {worker.returncode}")
            break
        for message in reader.consume(100, timeout=0.2):
            if message.error() is not None:
                continue
            if message.topic() == settings.dead_letter_topic:
                dead += 1
                timeline.say("✗", f"dead letter: {_reason(message)}")
                continue
            action = decode_action(message.value() or b"")
            actions[(action.customer_id, action.channel.value, action.template)] += 1
            timeline.say("←", _describe(action))
            reaction = reactions.pop((action.customer_id, action.template), None)
            if reaction:
                reaction()
    # let anything that should not come (Bertil's email, Dana's SMS) show up before judging
    for message in reader.consume(100, timeout=1.5):
        if message.error() is None and message.topic() != settings.dead_letter_topic:
            action = decode_action(message.value() or b"")
            actions[(action.customer_id, action.channel.value, action.template)] += 1
            timeline.say("←", _describe(action))
    return actions, dead


def _reactions(
    producer: TouchpointProducer, timeline: _Timeline
) -> dict[tuple[str, str], Callable[[], None]]:
    def dana_buys_in_store() -> None:
        producer.send(_order(DANA, "pos-6", SourceChannel.STORE, "Backpack"))
        producer.flush()
        timeline.say("→", "order.placed    store Dana reads the reminder and buys in the store")

    return {("dana", "cart_reminder"): dana_buys_in_store}


def _reason(message: Message) -> str:
    headers = dict(message.headers() or [])
    reason = headers.get("polku.error.reason") or b"?"
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
    return text[:90]


def _verdict(actions: Counter[tuple[str, str, str]], dead: int) -> int:
    print()
    print(f"polku demo: {sum(actions.values())} actions, {dead} dead letter(s)")
    missing = EXPECTED_ACTIONS - actions
    unexpected = actions - EXPECTED_ACTIONS
    for (customer, channel, template), count in missing.items():
        print(f"  MISSING    {count} x {channel} {template} to {customer}")
    for (customer, channel, template), count in unexpected.items():
        print(f"  UNEXPECTED {count} x {channel} {template} to {customer}")
    if missing or unexpected or dead != EXPECTED_DEAD_LETTERS:
        print("polku demo: FAILED: the outcome differs from what the journey promises")
        return 1
    print(
        "polku demo: OK: Aino got the email and the SMS coupon, Bertil bought at once and got "
        "nothing,\n            Chen (no phone) only the email, Dana no SMS after buying in the "
        "store;\n            the truncated event went to the dead-letter topic."
    )
    return 0
