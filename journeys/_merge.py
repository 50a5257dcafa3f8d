"""Merging two customers' states when identity resolution finds they are one person.

Deterministic and order-independent where it matters: the same pair gives the same result,
no journey runs twice, no pending timer is lost or fired twice, and caps count each send once.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import JsonValue

from journeys._engine import Outcome
from journeys._policy import ContactState
from journeys._state import (
    CustomerState,
    InstanceState,
    Timer,
    Transition,
    copy_state,
    deferral_timer,
    parked_timer,
)


def merge_states(survivor: CustomerState, absorbed: CustomerState, now: datetime) -> Outcome:
    """`absorbed` joins `survivor`; its pending timers are re-armed under the survivor's id.

    Same journey slot in both: the instance whose trigger happened first stays (ties by entry
    time, then instance id),
    the other ends with reason `merged` and its timer is cancelled. Profiles: the survivor's
    attributes win, tags are united. Consent: a withdrawal on either side wins. Sends counted
    for caps are united without double counting.
    """
    if survivor.erased or absorbed.erased:
        # an erased person is not re-created by a merge, nor does an erasure spread
        return Outcome(state=survivor)
    merged = copy_state(survivor)
    transitions: list[Transition] = []
    cancelled: list[str] = []
    rearm: list[Timer] = []
    for slot, incoming in sorted(absorbed.instances.items()):
        current = merged.instances.get(slot)
        keep, drop = _older_first(current, incoming) if current else (incoming, None)
        merged.instances[slot] = keep
        if drop is not None:
            transitions.append(_merged_away(drop, now))
            if drop.timer_id:
                cancelled.append(drop.timer_id)
        timer = parked_timer(merged.customer_id, incoming) if keep is incoming else None
        if timer is not None:
            rearm.append(timer)
    merged.profile = _merge_profile(merged.profile, absorbed.profile)
    merged.contact = _merge_contact(merged.contact, absorbed.contact, merged.customer_id, rearm)
    for name, count in absorbed.entries.items():
        merged.entries[name] = merged.entries.get(name, 0) + count
    for name, count in absorbed.finished.items():
        merged.finished[name] = merged.finished.get(name, 0) + count
    for name, at in absorbed.last_entry_at.items():
        merged.last_entry_at[name] = max(at, merged.last_entry_at.get(name, at))
    return Outcome(
        state=merged,
        timers=tuple(rearm),
        cancelled_timers=tuple(cancelled),
        transitions=tuple(transitions),
    )


def _older_first(
    current: InstanceState, incoming: InstanceState
) -> tuple[InstanceState, InstanceState]:
    # by when the triggering event happened, not when a worker got to it: partitions are
    # processed in no particular order, so processing time would make the winner a matter of luck
    ordered = sorted(
        [current, incoming],
        key=lambda i: (_happened_at(i), i.entered_at, i.instance_id),
    )
    return ordered[0], ordered[1]


def _happened_at(instance: InstanceState) -> datetime:
    try:
        return datetime.fromisoformat(str(instance.trigger.get("occurred_at")))
    except ValueError:
        return instance.entered_at


def _merged_away(instance: InstanceState, now: datetime) -> Transition:
    return Transition(
        kind="exited",
        journey=instance.journey,
        version=instance.version,
        instance_id=instance.instance_id,
        at=now,
        reason="merged",
        holdout=instance.holdout,
    )


def _merge_profile(
    mine: dict[str, JsonValue], theirs: dict[str, JsonValue]
) -> dict[str, JsonValue]:
    merged = {**theirs, **mine}
    tags = {*_tags(mine), *_tags(theirs)}
    if tags:
        merged["tags"] = list[JsonValue](sorted(tags))
    return merged


def _tags(profile: dict[str, JsonValue]) -> list[str]:
    tags = profile.get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _merge_contact(
    mine: ContactState, theirs: ContactState, customer_id: str, rearm: list[Timer]
) -> ContactState:
    consent: dict[str, dict[str, bool]] = {}
    for side in (mine.consent, theirs.consent):
        for channel, purposes in side.items():
            for purpose, granted in purposes.items():
                known = consent.setdefault(channel, {}).get(purpose)
                consent[channel][purpose] = granted if known is None else known and granted
    recent = sorted(
        {(r.channel, r.at): r for r in [*mine.recent, *theirs.recent]}.values(),
        key=lambda r: (r.at, r.channel),
    )
    deferred = dict(mine.deferred)
    for timer_id, pending in sorted(theirs.deferred.items()):
        action = pending.action.model_copy(update={"customer_id": customer_id})
        deferred[timer_id] = pending.model_copy(update={"action": action})
        rearm.append(deferral_timer(timer_id, action))
    return ContactState(consent=consent, recent=recent, deferred=deferred)
