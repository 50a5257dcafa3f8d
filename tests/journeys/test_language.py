"""The journey language feature by feature, on small journeys written inline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from journeys import (
    CustomerState,
    Engine,
    Journey,
    JourneyDefinitionError,
    JourneyRuntimeError,
    Outcome,
    decode_state,
    encode_state,
    library_journeys,
    load_journey_text,
    next_time_of_day,
    simulate,
)
from schemas import (
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    SourceChannel,
    Touchpoint,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HELSINKI = ZoneInfo("Europe/Helsinki")


def journey(steps: list[dict[str, Any]], **header: Any) -> Journey:
    document = {
        "name": "probe",
        "version": 1,
        "description": "a test journey",
        "owner": "tests",
        "trigger": {"event": "cart.abandoned"},
        "steps": steps,
    } | header
    return load_journey_text(yaml.safe_dump(document), "probe.yaml")


SEND_AND_EXIT: list[dict[str, Any]] = [
    {"id": "hello", "type": "send", "channel": "email", "template": "hello", "next": "done"},
    {"id": "done", "type": "exit"},
]


def cart(customer: str = "c1", cart_id: str = "k1", event_id: str = "e1") -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=T0,
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer),
        payload=CartPayload(cart_id=cart_id, items=[LineItem(sku="s", name="Shoe")]),
    )


def order(customer: str = "c1", channel: SourceChannel = SourceChannel.WEB) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"o-{customer}",
        occurred_at=T0,
        channel=channel,
        customer=CustomerRef(customer_id=customer),
        payload=OrderPlacedPayload(
            order_id="o1",
            items=[LineItem(sku="s", name="Shoe")],
            total="10",
            currency="EUR",
        ),
    )


def run(engine: Engine, events: list[tuple[Touchpoint, datetime]]) -> list[Outcome]:
    state = CustomerState(customer_id="c1")
    outcomes = []
    for event, now in events:
        outcome = engine.advance(state, event, now)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


# --- re-entry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reentry", "entries"),
    [
        ("always", 3),
        ("once", 1),
        ({"cooldown": "PT90M"}, 2),
    ],
)
def test_reentry_policies(reentry: Any, entries: int) -> None:
    engine = Engine(
        [journey(SEND_AND_EXIT, trigger={"event": "cart.abandoned", "reentry": reentry})]
    )
    times = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    outcomes = run(engine, [(cart(event_id=f"e{n}"), at) for n, at in enumerate(times)])
    assert sum(len(o.actions) for o in outcomes) == entries


def test_per_key_runs_one_instance_per_key_at_a_time() -> None:
    steps = [{"id": "pause", "type": "wait", "duration": "PT1H", "next": "done"}, SEND_AND_EXIT[1]]
    trigger = {"event": "cart.abandoned", "reentry": {"per_key": "trigger.payload.cart_id"}}
    engine = Engine([journey(steps, trigger=trigger)])
    outcomes = run(
        engine,
        [
            (cart(cart_id="k1", event_id="a"), T0),
            (cart(cart_id="k2", event_id="b"), T0),
            (cart(cart_id="k1", event_id="c"), T0),
        ],
    )
    assert sorted(outcomes[-1].state.instances) == ["probe#k1", "probe#k2"]
    assert [len(o.timers) for o in outcomes] == [1, 1, 0]


# --- waits ----------------------------------------------------------------------------------


def test_next_time_of_day_keeps_local_time_across_the_spring_dst_change() -> None:
    saturday_noon = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)  # 12:00 EET
    due = next_time_of_day(saturday_noon, "10:00", HELSINKI)
    assert due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 10:00 EEST, one hour less to UTC
    assert due.astimezone(HELSINKI).hour == 10


def test_next_time_of_day_across_the_autumn_dst_change_and_a_day_boundary() -> None:
    late_saturday = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)  # 00:30 on Sunday, EEST
    due = next_time_of_day(late_saturday, "09:00", HELSINKI)
    assert due == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)  # 09:00 EET after the change
    assert next_time_of_day(due, "09:00", HELSINKI) == datetime(2026, 10, 26, 7, 0, tzinfo=UTC)


def test_until_time_uses_the_profile_time_zone_over_the_default() -> None:
    steps = [
        {"id": "morning", "type": "wait", "until_time": "08:00", "next": "done"},
        SEND_AND_EXIT[1],
    ]
    engine = Engine([journey(steps)], default_timezone="Europe/Helsinki")
    in_new_york = CustomerState(customer_id="c1", profile={"timezone": "America/New_York"})
    outcome = engine.advance(in_new_york, cart(), T0)
    assert outcome.timers[0].due_at == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # 08:00 EST
    helsinki = engine.advance(CustomerState(customer_id="c2"), cart("c2"), T0)
    assert helsinki.timers[0].due_at == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 08:00 EET


def test_until_a_context_date_with_a_negative_offset() -> None:
    steps = [
        {
            "id": "before",
            "type": "wait",
            "until": {"path": "vars.at", "offset": "-P2D"},
            "next": "hello",
        },
        *SEND_AND_EXIT,
    ]
    setup = {
        "id": "set_at",
        "type": "update",
        "set": {"vars.at": "2026-03-20T10:00:00+00:00"},
        "next": "before",
    }
    engine = Engine([journey([setup, *steps])])
    outcome = engine.advance(CustomerState(customer_id="c1"), cart(), T0)
    assert outcome.timers[0].due_at == datetime(2026, 3, 18, 10, 0, tzinfo=UTC)


def test_until_a_missing_date_is_a_runtime_error_naming_the_step() -> None:
    steps = [
        {"id": "before", "type": "wait", "until": {"path": "trigger.payload.nope"}, "next": "done"},
        SEND_AND_EXIT[1],
    ]
    with pytest.raises(JourneyRuntimeError, match=r"'before'.*trigger.payload.nope"):
        Engine([journey(steps)]).advance(CustomerState(customer_id="c1"), cart(), T0)


# --- wait_for, goal, holdout, split, update -------------------------------------------------


def test_wait_for_times_out_into_on_timeout() -> None:
    steps = [
        {
            "id": "await_order",
            "type": "wait_for",
            "event": "order.placed",
            "timeout": "PT1H",
            "on_event": "done",
            "on_timeout": "hello",
        },
        *SEND_AND_EXIT,
    ]
    result = simulate(Engine([journey(steps)]), [cart()])
    assert [a.template for a in result.actions] == ["hello"]
    got_order = simulate(Engine([journey(steps)]), [cart(), order()])
    assert got_order.actions == []


def test_goal_outside_its_window_is_not_a_conversion() -> None:
    steps = [{"id": "pause", "type": "wait", "duration": "P10D", "next": "done"}, SEND_AND_EXIT[1]]
    probe = journey(steps, goal={"event": "order.placed", "within": "P1D"})
    late = run(Engine([probe]), [(cart(), T0), (order(), T0 + timedelta(days=2))])
    assert not any(t.kind == "goal" for t in late[-1].transitions)
    early = run(Engine([probe]), [(cart(), T0), (order(), T0 + timedelta(hours=2))])
    [goal] = [t for t in early[-1].transitions if t.kind == "goal"]
    assert goal.reason == "order.placed"
    assert early[-1].cancelled_timers == (early[0].timers[0].timer_id,)


def test_holdout_share_over_ten_thousand_customers() -> None:
    engine = Engine([journey(SEND_AND_EXIT, holdout_percent=10)])
    held = sum(
        not engine.advance(CustomerState(customer_id=f"c{n}"), cart(f"c{n}"), T0).actions
        for n in range(10_000)
    )
    assert 900 <= held <= 1100


def test_split_shares_and_determinism_over_ten_thousand_customers() -> None:
    steps: list[dict[str, Any]] = [
        {
            "id": "ab",
            "type": "split",
            "experiment": "subject",
            "variants": [
                {"name": "a", "percent": 20, "next": "send_a"},
                {"name": "b", "percent": 80, "next": "send_b"},
            ],
        },
        {"id": "send_a", "type": "send", "channel": "email", "template": "a", "next": "done"},
        {"id": "send_b", "type": "send", "channel": "email", "template": "b", "next": "done"},
        SEND_AND_EXIT[1],
    ]
    engine = Engine([journey(steps)])
    chosen = [
        engine.advance(CustomerState(customer_id=f"c{n}"), cart(f"c{n}"), T0).actions[0].template
        for n in range(10_000)
    ]
    assert 1_850 <= chosen.count("a") <= 2_150
    again = engine.advance(CustomerState(customer_id="c7"), cart("c7"), T0 + timedelta(days=9))
    assert again.actions[0].template == chosen[7]


def test_update_sets_vars_profile_and_tags_for_later_steps() -> None:
    steps = [
        {
            "id": "remember",
            "type": "update",
            "set": {"vars.cart": "{{ trigger.payload.cart_id }}", "profile.segment": "hiker"},
            "add_tags": ["carted", "hiker"],
            "remove_tags": ["lapsed"],
            "next": "hello",
        },
        {
            "id": "hello",
            "type": "send",
            "channel": "email",
            "template": "hello",
            "params": {"cart": "Cart {{ vars.cart }}", "segment": "{{ profile.segment }}"},
            "next": "done",
        },
        SEND_AND_EXIT[1],
    ]
    state = CustomerState(customer_id="c1", profile={"tags": ["lapsed", "vip"]})
    outcome = Engine([journey(steps)]).advance(state, cart(), T0)
    assert outcome.actions[0].params == {"cart": "Cart k1", "segment": "hiker"}
    assert outcome.state.profile == {"tags": ["carted", "hiker", "vip"], "segment": "hiker"}
    assert state.profile == {"tags": ["lapsed", "vip"]}, "advance must not mutate its input"


# --- seen -----------------------------------------------------------------------------------

# waits for a second cart, then sends the cart `seen` holds: the trigger's, or the later one's
AWAIT_ANOTHER_CART: list[dict[str, Any]] = [
    {
        "id": "another_cart",
        "type": "wait_for",
        "event": "cart.abandoned",
        "timeout": "PT1H",
        "on_event": "hello",
        "on_timeout": "hello",
    },
    {
        "id": "hello",
        "type": "send",
        "channel": "email",
        "template": "hello",
        "params": {"cart": "{{ seen.cart_abandoned.payload.cart_id }}"},
        "next": "done",
    },
    SEND_AND_EXIT[1],
]


def later_cart(cart_id: str) -> CartAbandoned:
    return cart(cart_id=cart_id, event_id=f"e-{cart_id}").model_copy(
        update={"occurred_at": T0 + timedelta(minutes=10)}
    )


def test_seen_of_the_triggers_type_is_the_trigger_kept_once_in_the_state() -> None:
    engine = Engine([journey(AWAIT_ANOTHER_CART)])
    entered = engine.advance(CustomerState(customer_id="c1"), cart(cart_id="k1"), T0)
    instance = entered.state.instances["probe"]
    assert instance.trigger["payload"]["cart_id"] == "k1"
    assert instance.seen == {}

    result = simulate(engine, [cart(cart_id="k1")])
    assert [a.params for a in result.actions] == [{"cart": "k1"}]


def test_a_later_event_of_the_triggers_type_replaces_it_in_seen() -> None:
    once = {"event": "cart.abandoned", "reentry": "once"}  # the later cart enters no other
    engine = Engine([journey(AWAIT_ANOTHER_CART, trigger=once)])
    result = simulate(engine, [cart(cart_id="k1"), later_cart("k2")])
    assert [a.params for a in result.actions] == [{"cart": "k2"}]


def test_a_state_stored_with_the_trigger_in_seen_reads_the_same() -> None:
    engine = Engine([journey(AWAIT_ANOTHER_CART)])
    stored = engine.advance(CustomerState(customer_id="c1"), cart(cart_id="k1"), T0).state
    instance = stored.instances["probe"]
    # how states were stored before the trigger was kept once
    instance.seen["cart_abandoned"] = dict(instance.trigger)
    older = decode_state(encode_state(stored))

    result = simulate(engine, [], states={"c1": older}, until=T0 + timedelta(hours=2))
    assert [a.params for a in result.actions] == [{"cart": "k1"}]


# --- versions and migrations ----------------------------------------------------------------


def _cart_versions() -> tuple[Journey, Journey]:
    by_version = {j.version: j for j in library_journeys() if j.name == "abandoned_cart"}
    return by_version[1], by_version[2]


def test_a_v1_instance_migrates_to_v2_and_its_pending_timer_still_fires() -> None:
    v1, v2 = _cart_versions()
    entered = Engine([v1]).advance(CustomerState(customer_id="c1"), cart(), T0)
    both = Engine([v2])
    assert both.runnable("abandoned_cart", 1)
    timer = entered.timers[0]
    fired = both.advance(entered.state, timer.fired_event(timer.due_at), timer.due_at)
    assert [t.kind for t in fired.transitions][:1] == ["migrated"]
    assert [a.journey_version for a in fired.actions] == [2]
    assert fired.state.instances["abandoned_cart"].version == 2


def test_a_version_that_no_one_can_run_is_not_runnable() -> None:
    v1, _ = _cart_versions()
    assert not Engine([v1]).runnable("abandoned_cart", 7)
    assert not Engine([]).runnable("abandoned_cart", 1)


def test_a_migration_must_map_every_wait_of_the_old_version(tmp_path: Path) -> None:
    v1, v2 = _cart_versions()
    document = yaml.safe_load(Path(v2.source).read_text())
    del document["migrate"]["steps"]["wait_before_coupon"]
    partial = load_journey_text(yaml.safe_dump(document), "partial.yaml")
    with pytest.raises(JourneyDefinitionError, match=r"partial.yaml.*'wait_before_coupon'"):
        Engine([v1, partial])


# --- load-time checks of the new constructs -------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "header", "message"),
    [
        (
            [{"id": "w", "type": "wait", "next": "done"}, SEND_AND_EXIT[1]],
            {},
            "step 'w': a wait needs exactly one of duration, until_time or until",
        ),
        (
            [{"id": "w", "type": "wait", "until_time": "25:00", "next": "done"}, SEND_AND_EXIT[1]],
            {},
            "step 'w'.*not a time of day",
        ),
        (
            [
                {
                    "id": "s",
                    "type": "split",
                    "variants": [
                        {"name": "a", "percent": 60, "next": "done"},
                        {"name": "b", "percent": 60, "next": "done"},
                    ],
                },
                SEND_AND_EXIT[1],
            ],
            {},
            "step 's'.*add up to 120",
        ),
        (
            [{"id": "u", "type": "update", "next": "done"}, SEND_AND_EXIT[1]],
            {},
            "step 'u'.*at least one of set",
        ),
        (
            [
                {"id": "u", "type": "update", "set": {"event.x": 1}, "next": "done"},
                SEND_AND_EXIT[1],
            ],
            {},
            "step 'u'",
        ),
        (
            [{"id": "loop", "type": "wait", "duration": "PT1H", "next": "loop"}],
            {},
            "step 'loop': no path from here reaches an exit",
        ),
        (SEND_AND_EXIT, {"trigger": {"event": "timer.fired"}}, "timer.fired is polku's own"),
        (
            SEND_AND_EXIT,
            {"migrate": {"from_version": 1, "steps": {}}},
            "from_version must be older",
        ),
        (
            SEND_AND_EXIT,
            {"version": 2, "migrate": {"from_version": 1, "steps": {"w": "hello"}}},
            "maps 'w' to 'hello', which is not a wait step",
        ),
        (
            SEND_AND_EXIT,
            {"trigger": {"event": "cart.abandoned", "reentry": "sometimes"}},
            "reentry",
        ),
    ],
)
def test_bad_constructs_are_rejected_at_load(
    steps: list[dict[str, Any]], header: dict[str, Any], message: str
) -> None:
    with pytest.raises(JourneyDefinitionError, match=message):
        journey(steps, **header)


def test_a_predicate_value_may_reference_the_context() -> None:
    steps = [
        {
            "id": "await_same_cart_order",
            "type": "wait_for",
            "event": "order.placed",
            "where": {
                "path": "event.payload.order_id",
                "op": "eq",
                "value": "{{ trigger.payload.cart_id }}",
            },
            "timeout": "PT1H",
            "on_event": "hello",
            "on_timeout": "done",
        },
        *SEND_AND_EXIT,
    ]
    engine = Engine([journey(steps)])
    entered = engine.advance(CustomerState(customer_id="c1"), cart(cart_id="o1"), T0)
    matched = engine.advance(entered.state, order(), T0 + timedelta(minutes=5))
    assert [a.template for a in matched.actions] == ["hello"]
    other = engine.advance(CustomerState(customer_id="c1"), cart(cart_id="zz"), T0)
    assert engine.advance(other.state, order(), T0).actions == ()
