from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from journeys import Timer
from streams import DueTimeIndex

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def timer(timer_id: str, due_in_seconds: float) -> Timer:
    return Timer(
        timer_id=timer_id,
        customer_id="c1",
        journey="j",
        journey_version=1,
        instance_id="i1",
        step_id="wait",
        due_at=T0 + timedelta(seconds=due_in_seconds),
    )


def test_pops_only_due_timers_earliest_first() -> None:
    index = DueTimeIndex()
    for timer_id, seconds in [("late", 30), ("first", 1), ("second", 2), ("future", 3600)]:
        index.add(timer(timer_id, seconds))

    due = index.pop_due(T0 + timedelta(seconds=30), limit=10)

    assert [t.timer_id for t in due] == ["first", "second", "late"]
    assert len(index) == 1
    assert "future" in index
    assert index.next_due() == T0 + timedelta(seconds=3600)


def test_a_timer_due_exactly_now_is_due() -> None:
    index = DueTimeIndex()
    index.add(timer("t", 5))
    assert [t.timer_id for t in index.pop_due(T0 + timedelta(seconds=5), limit=1)] == ["t"]


def test_limit_bounds_one_pop() -> None:
    index = DueTimeIndex()
    for n in range(5):
        index.add(timer(f"t{n}", n))
    assert len(index.pop_due(T0 + timedelta(hours=1), limit=2)) == 2
    assert len(index) == 3


def test_discarded_timers_never_fire() -> None:
    index = DueTimeIndex()
    index.add(timer("cancelled", 1))
    index.add(timer("kept", 2))
    index.discard("cancelled")
    index.discard("never-added")

    assert [t.timer_id for t in index.pop_due(T0 + timedelta(minutes=1), limit=10)] == ["kept"]
    assert len(index) == 0
    assert index.next_due() is None


def test_re_adding_a_timer_with_a_new_due_time_moves_it() -> None:
    index = DueTimeIndex()
    index.add(timer("t", 1))
    index.add(timer("t", 100))

    assert index.pop_due(T0 + timedelta(seconds=50), limit=10) == []
    assert [t.timer_id for t in index.pop_due(T0 + timedelta(seconds=100), limit=10)] == ["t"]
    assert index.pop_due(T0 + timedelta(days=1), limit=10) == []


def test_a_timer_put_back_after_a_failed_fire_fires_once() -> None:
    index = DueTimeIndex()
    index.add(timer("t", 1))
    [popped] = index.pop_due(T0 + timedelta(seconds=1), limit=10)
    index.add(popped)
    assert [t.timer_id for t in index.pop_due(T0 + timedelta(seconds=2), limit=10)] == ["t"]
    assert index.pop_due(T0 + timedelta(seconds=3), limit=10) == []


def test_clear_empties_the_index() -> None:
    index = DueTimeIndex()
    index.add(timer("t", 1))
    index.clear()
    assert len(index) == 0
    assert index.pop_due(T0 + timedelta(days=1), limit=10) == []


def test_a_popped_timer_names_the_customer_whose_state_holds_it() -> None:
    index = DueTimeIndex()
    index.add(timer("t", 1))
    # the same timer id armed again under another profile (an identity merge moves timers)
    index.add_due("t", (T0 + timedelta(seconds=1)).timestamp(), "survivor")
    assert index.pop_due(T0 + timedelta(seconds=1), limit=10) == [
        ("t", T0 + timedelta(seconds=1), "survivor")
    ]
    assert index.pop_due(T0 + timedelta(days=1), limit=10) == []


def test_due_until_sees_exactly_the_timers_due_by_then_and_removes_none() -> None:
    rng = random.Random(7)
    index = DueTimeIndex()
    model: dict[str, float] = {}  # what the index should hold
    for n in range(500):
        due = T0 + timedelta(seconds=rng.uniform(0, 100))
        index.add(timer(f"t{n}", 0).model_copy(update={"due_at": due}))
        model[f"t{n}"] = due.timestamp()
    for n in range(0, 500, 7):
        index.discard(f"t{n}")
        del model[f"t{n}"]
    index.add(timer("t1", 500))  # moved later: its old heap entry must not count
    model["t1"] = (T0 + timedelta(seconds=500)).timestamp()
    cutoff = (T0 + timedelta(seconds=40)).timestamp()

    seen = list(index.due_until(cutoff))

    expected = {timer_id for timer_id, due in model.items() if due <= cutoff}
    assert 100 < len(expected) < 300  # the cutoff splits the index
    assert sorted(timer_id for timer_id, _, _ in seen) == sorted(expected)  # each once
    assert all(due == model[timer_id] and customer == "c1" for timer_id, due, customer in seen)
    assert len(index) == len(model)


def test_due_until_on_an_empty_index_sees_nothing() -> None:
    assert list(DueTimeIndex().due_until(float("inf"))) == []


def test_timers_added_at_once_pop_as_if_added_one_by_one() -> None:
    rng = random.Random(7)
    entries = [(f"t{n}", T0.timestamp() + rng.uniform(0, 100), f"c{n % 5}") for n in range(200)]
    one_by_one, at_once = DueTimeIndex(), DueTimeIndex()
    one_by_one.add(timer("already there", 50))
    at_once.add(timer("already there", 50))
    for entry in entries:
        one_by_one.add_due(*entry)
    at_once.add_many(entries)
    at_once.discard("t3")
    one_by_one.discard("t3")

    until = T0 + timedelta(seconds=100)
    popped = at_once.pop_due(until, limit=1000)
    assert popped == one_by_one.pop_due(until, limit=1000)
    assert len(popped) == 200  # 199 entries and the one there before
    assert [p.due_at for p in popped] == sorted(p.due_at for p in popped)
    assert len(at_once) == 0
