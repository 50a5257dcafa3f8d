"""Actions: what polku asks a sender to do, one topic per contact channel."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from schemas._touchpoints import ContactChannel, Identifier, Purpose


class Action(BaseModel):
    """A follow-up for a sender. `action_id` is deterministic: senders dedupe on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    customer_id: Identifier
    journey: Identifier
    journey_version: Annotated[int, Field(ge=1)]
    instance_id: Identifier
    step_id: Identifier
    channel: ContactChannel
    template: Identifier
    params: dict[str, JsonValue] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    purpose: Purpose = "marketing"
    triggered_by: Identifier
    created_at: AwareDatetime
    not_before: AwareDatetime


SuppressionReason = Literal[
    "no_consent", "no_consented_channel", "frequency_cap", "global_holdout", "erased"
]


class Suppression(BaseModel):
    """An action the contact policy did not let out, and why: for audit and metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    customer_id: Identifier
    journey: Identifier
    journey_version: Annotated[int, Field(ge=1)]
    step_id: Identifier
    channel: ContactChannel | Literal["preferred"]
    reason: Literal[
        "no_consent", "no_consented_channel", "frequency_cap", "global_holdout", "erased"
    ]
    at: AwareDatetime


def stable_id(*parts: str) -> str:
    """A 32-hex-digit id derived from `parts` alone, so re-processing yields the same id.

    The parts are length-prefixed so no two different tuples can join to the same text.
    """
    material = "".join([f"{len(part)}:{part}" for part in parts])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def action_id_for(
    *,
    journey: str,
    journey_version: int,
    customer_id: str,
    instance_id: str,
    step_id: str,
    triggered_by: str,
) -> str:
    """The id of the action a step emits for one triggering event of one journey instance."""
    return stable_id(journey, str(journey_version), customer_id, instance_id, step_id, triggered_by)
