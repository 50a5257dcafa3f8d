"""The contact policy: one set of rules over every journey's sends.

Consent per channel and purpose, quiet hours in the customer's time zone (a send inside them is
deferred to the end of the window, never dropped), frequency caps with priorities, the preferred
channel with fallback, and a global holdout. Pure: the decision is a function of the customer's
contact state, the action and the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from journeys._build import AwareTime
from journeys._calendar import bucket, next_time_of_day
from schemas import Action, ContactChannel, Purpose
from schemas._journey_format import IsoDuration, Percent, TimeOfDay

_STRICT = ConfigDict(extra="forbid", frozen=True)


class QuietHours(BaseModel):
    """A nightly window, e.g. 21:00-08:00 local time, in which marketing sends wait."""

    model_config = _STRICT

    start: TimeOfDay = "21:00"
    end: TimeOfDay = "08:00"


class FrequencyCap(BaseModel):
    """At most `max` marketing sends per `per` on `channel` (or on all channels together)."""

    model_config = _STRICT

    channel: ContactChannel | None = None
    max: Annotated[int, Field(ge=1)]
    per: IsoDuration


class ContactPolicy(BaseModel):
    """The deployment's rules. `explicit` marketing consent means no opt-in, no send (GDPR);
    `implied` means a send is allowed until the customer opts out."""

    model_config = _STRICT

    marketing_consent: Literal["explicit", "implied"] = "explicit"
    transactional_consent: Literal["explicit", "implied"] = "implied"
    quiet_hours: QuietHours | None = Field(default_factory=QuietHours)
    caps: list[FrequencyCap] = Field(
        default_factory=lambda: [
            FrequencyCap(channel=ContactChannel.SMS, max=1, per=timedelta(days=1)),
            FrequencyCap(max=3, per=timedelta(days=7)),
        ]
    )
    preferred_fallback: list[ContactChannel] = Field(
        default_factory=lambda: [ContactChannel.PUSH, ContactChannel.EMAIL, ContactChannel.SMS]
    )
    global_holdout_percent: Percent = 0

    @classmethod
    def permissive(cls) -> ContactPolicy:
        """Everything allowed at once: for demos and tests of journeys, never for production."""
        return cls(marketing_consent="implied", quiet_hours=None, caps=[])


class SentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    channel: ContactChannel
    at: AwareTime


class ContactState(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """What the policy remembers of a customer: consent given or withdrawn, recent marketing
    sends (for caps), and sends waiting for quiet hours or a cap to pass.

    Part of `CustomerState` (plain data, see there); a deferred send's `PendingSend` stays a
    pydantic model, since it holds an `Action`.
    """

    consent: dict[str, dict[str, bool]] = {}
    recent: list[SentRecord] = []
    deferred: dict[str, PendingSend] = {}

    def set_consent(self, channel: str, purpose: Purpose, granted: bool) -> None:
        self.consent.setdefault(channel, {})[purpose] = granted


class PendingSend(BaseModel):
    """An action waiting for the policy's verdict (or for its deferral timer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    requested_channel: str
    on_cap: Literal["suppress", "defer"] = "suppress"


@dataclass(frozen=True)
class Decision:
    verdict: Literal["send", "suppress", "defer"]
    channel: ContactChannel | None = None
    reason: str | None = None
    until: datetime | None = None


def decide(
    policy: ContactPolicy,
    contact: ContactState,
    pending: PendingSend,
    *,
    preferred: str | None,
    zone: ZoneInfo,
    now: datetime,
) -> Decision:
    """The policy's verdict on one action at `now`."""
    action, requested_channel, on_cap = pending.action, pending.requested_channel, pending.on_cap
    holdout = policy.global_holdout_percent
    if holdout and bucket(action.customer_id, "global-holdout") < holdout * 100:
        return Decision("suppress", reason="global_holdout")
    channel = _channel(policy, contact, action.purpose, requested_channel, preferred)
    if channel is None:
        reason = "no_consented_channel" if requested_channel == "preferred" else "no_consent"
        return Decision("suppress", reason=reason)
    if action.purpose == "marketing" and policy.quiet_hours is not None:
        wake = quiet_until(policy.quiet_hours, now, zone)
        if wake is not None:
            return Decision("defer", channel=channel, reason="quiet_hours", until=wake)
    if action.purpose == "marketing":
        freed = _cap_frees_at(policy, contact, channel, now)
        if freed is not None:
            if on_cap == "defer":
                return Decision("defer", channel=channel, reason="frequency_cap", until=freed)
            return Decision("suppress", channel=channel, reason="frequency_cap")
    return Decision("send", channel=channel)


def has_consent(policy: ContactPolicy, contact: ContactState, channel: str, purpose: str) -> bool:
    recorded = contact.consent.get(channel, {}).get(purpose)
    if recorded is not None:
        return recorded
    default = policy.marketing_consent if purpose == "marketing" else policy.transactional_consent
    return default == "implied"


def _channel(
    policy: ContactPolicy,
    contact: ContactState,
    purpose: str,
    requested: str,
    preferred: str | None,
) -> ContactChannel | None:
    if requested != "preferred":
        allowed = has_consent(policy, contact, requested, purpose)
        return ContactChannel(requested) if allowed else None
    candidates = [preferred] if preferred in set(ContactChannel) else []
    candidates += [channel.value for channel in policy.preferred_fallback]
    for candidate in candidates:
        if candidate and has_consent(policy, contact, candidate, purpose):
            return ContactChannel(candidate)
    return None


def quiet_until(window: QuietHours, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet window `now` falls in, or None when it is not quiet now."""
    local = now.astimezone(zone).time()
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    spans_midnight = start > end
    inside = (local >= start or local < end) if spans_midnight else (start <= local < end)
    return next_time_of_day(now, window.end, zone) if inside else None


def _cap_frees_at(
    policy: ContactPolicy, contact: ContactState, channel: ContactChannel, now: datetime
) -> datetime | None:
    """None if a send fits every cap now, else when the tightest full cap frees a slot."""
    latest: datetime | None = None
    for cap in policy.caps:
        if cap.channel not in (None, channel):
            continue
        counted = sorted(
            r.at
            for r in contact.recent
            if now - r.at < cap.per and cap.channel in (None, r.channel)
        )
        if len(counted) >= cap.max:
            frees = counted[len(counted) - cap.max] + cap.per
            latest = frees if latest is None else max(latest, frees)
    return latest


def remember_send(
    policy: ContactPolicy, contact: ContactState, channel: ContactChannel, now: datetime
) -> None:
    """Count a marketing send, forgetting those older than the longest cap window."""
    horizon = max((cap.per for cap in policy.caps), default=timedelta(0))
    contact.recent = [r for r in contact.recent if now - r.at < horizon]
    if horizon:
        contact.recent.append(SentRecord(channel, now))
