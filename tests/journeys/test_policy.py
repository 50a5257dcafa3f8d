"""The contact policy over real journeys: consent, quiet hours, caps, channels, holdout, erasure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import yaml

from journeys import (
    ContactPolicy,
    CustomerState,
    Engine,
    FrequencyCap,
    Journey,
    Outcome,
    QuietHours,
    Timer,
    document_timers,
    encode_state,
    load_journey_text,
    pending_timers,
    simulate,
    state_timer,
    stored_state_timers,
)
from schemas import (
    CartAbandoned,
    CartPayload,
    ConsentChanged,
    ConsentPayload,
    ContactChannel,
    CustomerErased,
    CustomerRef,
    ErasurePayload,
    LineItem,
    MessageReceipt,
    ReceiptPayload,
    SourceChannel,
    Touchpoint,
)

# 10:00 in Helsinki (UTC+2 in winter): outside the default 21:00-08:00 quiet hours
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def journey(name: str, steps: list[dict[str, Any]], trigger: str = "cart.abandoned") -> Journey:
    document = {
        "name": name,
        "version": 1,
        "description": "policy probe",
        "owner": "tests",
        "trigger": {"event": trigger},
        "steps": steps,
    }
    return load_journey_text(yaml.safe_dump(document), f"{name}.yaml")


def send(step_id: str, channel: str = "email", nxt: str = "done", **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "send",
        "channel": channel,
        "template": step_id,
        "next": nxt,
    } | extra


DONE = {"id": "done", "type": "exit"}
TWO_EMAILS = journey(
    "two_emails",
    [
        send("first", nxt="pause"),
        {"id": "pause", "type": "wait", "duration": "PT1H", "next": "second"},
        send("second"),
        DONE,
    ],
)


def cart(at: datetime = T0, customer: str = "c1", event_id: str = "e1") -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=at,
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer),
        payload=CartPayload(cart_id="k1", items=[LineItem(sku="s", name="Shoe")]),
    )


def consent(
    channel: str, granted: bool, at: datetime = T0, purpose: str = "marketing"
) -> ConsentChanged:
    return ConsentChanged(
        event_id=f"consent-{channel}-{granted}-{at.isoformat()}",
        occurred_at=at,
        channel=SourceChannel.CRM,
        customer=CustomerRef(customer_id="c1"),
        payload=ConsentPayload(channel=ContactChannel(channel), purpose=purpose, granted=granted),
    )


def engine(*journeys: Journey, **policy: Any) -> Engine:
    return Engine(
        list(journeys), default_timezone="Europe/Helsinki", policy=ContactPolicy(**policy)
    )


def feed(
    engine: Engine, events: list[Touchpoint], state: CustomerState | None = None
) -> list[Outcome]:
    state = state or CustomerState(customer_id="c1")
    outcomes = []
    for event in events:
        outcome = engine.advance(state, event, event.occurred_at)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


def test_explicit_consent_means_no_opt_in_no_send_and_a_suppression_record() -> None:
    [outcome] = feed(engine(TWO_EMAILS, quiet_hours=None), [cart()])
    assert outcome.actions == ()
    [record] = outcome.suppressed
    assert (record.reason, record.journey, record.step_id, record.channel) == (
        "no_consent",
        "two_emails",
        "first",
        "email",
    )
    assert [t.kind for t in outcome.transitions if t.kind == "suppressed"] == ["suppressed"]


def test_consent_withdrawn_mid_journey_stops_later_sends() -> None:
    policy_engine = engine(TWO_EMAILS, quiet_hours=None)
    events: list[Touchpoint] = [
        consent("email", True),
        cart(),
        consent("email", False, T0 + timedelta(minutes=30)),
    ]
    result = simulate(policy_engine, events)
    assert [a.step_id for a in result.actions] == ["first"]
    assert any(
        e.transition.kind == "suppressed" and e.transition.step_id == "second"
        for e in result.timeline
    )


def test_an_unsubscribe_receipt_withdraws_marketing_consent() -> None:
    unsubscribed = MessageReceipt(
        event_id="rcpt-1",
        occurred_at=T0 + timedelta(minutes=5),
        channel=SourceChannel.EMAIL,
        customer=CustomerRef(customer_id="c1"),
        payload=ReceiptPayload(
            action_id="0" * 32, channel=ContactChannel.EMAIL, status="unsubscribed"
        ),
    )
    result = simulate(
        engine(TWO_EMAILS, quiet_hours=None), [consent("email", True), cart(), unsubscribed]
    )
    assert [a.step_id for a in result.actions] == ["first"]


def test_transactional_sends_follow_their_own_rule() -> None:
    receipt = journey("receipt", [send("receipt", purpose="transactional"), DONE])
    [outcome] = feed(engine(receipt, quiet_hours=QuietHours()), [cart(T0.replace(hour=22))])
    assert [a.purpose for a in outcome.actions] == ["transactional"], (
        "no consent, night: still sent"
    )
    withdrawn = feed(engine(receipt), [consent("email", False, purpose="transactional"), cart()])
    assert withdrawn[-1].actions == ()


def test_quiet_hours_defer_across_the_day_boundary_and_the_deferred_send_goes_out() -> None:
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Helsinki
    policy_engine = engine(TWO_EMAILS, marketing_consent="implied")
    [outcome] = feed(policy_engine, [cart(late)])
    assert outcome.actions == ()
    wake = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 08:00 in Helsinki, the next day
    deferral = [t for t in outcome.timers if t.due_at == wake]
    assert len(deferral) == 1
    result = simulate(policy_engine, [cart(late)])
    first = [a for a in result.actions if a.step_id == "first"]
    assert [a.not_before for a in first] == [wake]


def test_the_state_holds_every_live_timer_a_wait_and_a_deferred_send_alike() -> None:
    # the shell keeps no timer but in the state: what the engine armed, less what it
    # cancelled or fired, is what the state (and its stored document) waits on
    policy_engine = engine(TWO_EMAILS, marketing_consent="implied")
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Helsinki: the first is deferred
    outcome = policy_engine.advance(CustomerState(customer_id="c1"), cart(late), late)
    live: dict[str, Timer] = {}
    kinds = set()
    for _ in range(10):
        live.update((t.timer_id, t) for t in outcome.timers)
        for timer_id in outcome.cancelled_timers:
            live.pop(timer_id)
        document = document_timers(orjson.loads(encode_state(outcome.state)))
        stored = [t.timer("c1") for t in document]
        assert [t.timer("c1") for t in stored_state_timers(encode_state(outcome.state))] == stored
        by_id = {t.timer_id: t for t in pending_timers(outcome.state)}
        assert by_id == {t.timer_id: t for t in stored} == live
        # one timer looked up in the decoded state, as a worker firing it does
        assert all(state_timer(outcome.state, i, "c1") == t for i, t in live.items())
        assert state_timer(outcome.state, "no-such-timer", "c1") is None
        kinds.add(len(outcome.state.contact.deferred) > 0)
        if not live:
            break
        earliest = min(live.values(), key=lambda t: t.due_at)
        del live[earliest.timer_id]
        fired = earliest.fired_event(earliest.due_at)
        outcome = policy_engine.advance(outcome.state, fired, earliest.due_at)
    assert not live
    assert not pending_timers(outcome.state)
    assert kinds == {True, False}  # both a deferred send and a wait alone were held


def test_a_simulation_resumed_from_recorded_states_sends_their_deferred_sends() -> None:
    policy_engine = engine(TWO_EMAILS, marketing_consent="implied")
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Helsinki: the first is deferred
    [outcome] = feed(policy_engine, [cart(late)])
    assert outcome.state.contact.deferred

    result = simulate(policy_engine, [], states={"c1": outcome.state})

    wake = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 08:00 in Helsinki
    assert [(a.step_id, a.not_before) for a in result.actions if a.step_id == "first"] == [
        ("first", wake)
    ]


def test_quiet_hours_follow_the_dst_change() -> None:
    # 01:00 on 29 March 2026 in Helsinki is EET; at 03:00 clocks jump to 04:00 EEST
    night = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    [outcome] = feed(engine(TWO_EMAILS, marketing_consent="implied"), [cart(night)])
    [deferral] = [t for t in outcome.timers if t.step_id == "first"]
    assert deferral.due_at == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 08:00 EEST


def test_a_deferred_send_is_judged_again_when_it_wakes() -> None:
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)
    events: list[Touchpoint] = [
        consent("email", True, late - timedelta(minutes=1)),
        cart(late),
        consent("email", False, late + timedelta(hours=2)),
    ]
    result = simulate(engine(TWO_EMAILS), events)
    assert [a.step_id for a in result.actions] == []
    kinds = [(e.transition.kind, e.transition.reason) for e in result.timeline]
    assert ("deferred", "quiet_hours") in kinds
    assert ("suppressed", "no_consent") in kinds


def test_caps_with_two_competing_journeys_let_the_higher_priority_win() -> None:
    urgent = journey("urgent", [send("urgent_sms", "sms", priority=90), DONE])
    casual = journey("casual", [send("casual_sms", "sms", priority=10), DONE])
    deferring = journey("patient", [send("patient_sms", "sms", priority=5, on_cap="defer"), DONE])
    caps = [FrequencyCap(channel=ContactChannel.SMS, max=1, per=timedelta(days=1))]
    policy_engine = engine(
        casual, urgent, deferring, marketing_consent="implied", quiet_hours=None, caps=caps
    )
    [outcome] = feed(policy_engine, [cart()])
    assert [a.step_id for a in outcome.actions] == ["urgent_sms"]
    assert [(s.step_id, s.reason) for s in outcome.suppressed] == [("casual_sms", "frequency_cap")]
    [deferral] = outcome.timers
    assert deferral.due_at == T0 + timedelta(days=1)


def test_a_global_cap_counts_every_channel_once() -> None:
    mixed = journey(
        "mixed", [send("a", "email", nxt="b"), send("b", "push", nxt="c"), send("c", "sms"), DONE]
    )
    policy_engine = engine(
        mixed,
        marketing_consent="implied",
        quiet_hours=None,
        caps=[FrequencyCap(max=2, per=timedelta(days=7))],
    )
    [outcome] = feed(policy_engine, [cart()])
    assert len(outcome.actions) == 2
    assert [s.reason for s in outcome.suppressed] == ["frequency_cap"]


def test_preferred_channel_falls_back_when_it_lacks_consent() -> None:
    preferred = journey("pref", [send("hello", "preferred"), DONE])
    policy_engine = engine(
        preferred, quiet_hours=None, preferred_fallback=[ContactChannel.PUSH, ContactChannel.EMAIL]
    )
    state = CustomerState(customer_id="c1", profile={"preferred_channel": "sms"})
    outcomes = feed(policy_engine, [consent("email", True), cart()], state)
    assert [a.channel for a in outcomes[-1].actions] == [ContactChannel.EMAIL]
    with_sms = feed(policy_engine, [consent("sms", True), cart()], state)
    assert [a.channel for a in with_sms[-1].actions] == [ContactChannel.SMS]
    nothing = feed(policy_engine, [cart()], state)
    assert [s.reason for s in nothing[-1].suppressed] == ["no_consented_channel"]


def test_global_holdout_share_over_ten_thousand_customers_and_goals_still_count() -> None:
    hello = journey("hello", [send("hi"), DONE])
    policy_engine = engine(
        hello, marketing_consent="implied", quiet_hours=None, global_holdout_percent=5
    )
    held = 0
    for n in range(10_000):
        outcome = policy_engine.advance(
            CustomerState(customer_id=f"c{n}"), cart(customer=f"c{n}"), T0
        )
        held += [s.reason for s in outcome.suppressed] == ["global_holdout"]
    assert 430 <= held <= 570


def test_erasure_leaves_no_state_cancels_timers_and_nothing_is_sent_afterwards() -> None:
    policy_engine = engine(TWO_EMAILS, marketing_consent="implied", quiet_hours=None)
    entered = feed(policy_engine, [cart()])[-1]
    erase = CustomerErased(
        event_id="erase-1",
        occurred_at=T0 + timedelta(minutes=1),
        channel=SourceChannel.CRM,
        customer=CustomerRef(customer_id="c1"),
        payload=ErasurePayload(),
    )
    erased = policy_engine.advance(entered.state, erase, erase.occurred_at)
    assert erased.erased
    assert set(erased.cancelled_timers) == {t.timer_id for t in entered.timers}
    assert erased.state == CustomerState(customer_id="c1", erased=True)
    later = policy_engine.advance(erased.state, cart(T0 + timedelta(hours=2), event_id="e2"), T0)
    assert (later.actions, later.timers, later.state) == ((), (), erased.state)
    timer = entered.timers[0]
    fired = policy_engine.advance(erased.state, timer.fired_event(timer.due_at), timer.due_at)
    assert fired.actions == ()


@pytest.mark.parametrize(
    "bad",
    [
        {"start": "25:00"},
        {"caps": [{"max": 0, "per": "P1D"}]},
        {"marketing_consent": "maybe"},
        {"unknown": 1},
    ],
)
def test_a_bad_policy_is_rejected(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    document = {"quiet_hours": bad} if "start" in bad else bad
    with pytest.raises(ValidationError):
        ContactPolicy.model_validate(document)
