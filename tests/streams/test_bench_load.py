"""The benchmark's synthetic events are valid touchpoints of the intended mix."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas import decode_touchpoint
from streams._bench_load import mixed_events, registrations, signups

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_the_mix_decodes_with_the_real_schemas_and_keys_by_customer() -> None:
    events = list(mixed_events(3000, 200, NOW))
    kinds: Counter[str] = Counter()
    for generated in events:
        event = decode_touchpoint(generated.value)
        assert generated.key == event.customer.key.encode()
        assert generated.event_id == event.event_id
        kinds[event.type] += 1
    assert kinds.most_common(1)[0][0] == "product.viewed"
    assert len(kinds) == 8
    assert len({g.key for g in events}) > 150  # spread over many customers
    assert 150 < sum(len(g.value) for g in events) / len(events) < 400  # ~200-byte JSON


def test_signups_and_registrations_decode_and_are_due_when_asked() -> None:
    due = NOW + timedelta(minutes=5)
    for generated in [*signups(0, 5, NOW), *registrations(0, 5, NOW, due)]:
        event = decode_touchpoint(generated.value)
        assert generated.key == event.customer.key.encode()
    registered = decode_touchpoint(next(registrations(7, 1, NOW, due)).value)
    assert registered.type == "event.registered"
    assert registered.payload.starts_at - timedelta(days=2) == due
