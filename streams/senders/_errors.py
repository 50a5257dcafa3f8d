"""What can go wrong when delivering one action, and what the sender loop does about it."""

from __future__ import annotations

from typing import Literal

from schemas import PolkuError
from streams._errors import ConfigError

FailureStatus = Literal["bounced", "failed"]


class DeliveryError(PolkuError):
    """One action could not be delivered. `kind` is a short, bounded code (a metric label and
    the dead-letter `polku.error.kind`); `detail` is the reason, free of personal data."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class TransientDeliveryError(DeliveryError):
    """Worth another attempt later (timeouts, 5xx, 429, 4xx SMTP replies, lost connections).

    `retry_after` is the provider's own wait in seconds (Retry-After), when it gave one.
    """

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(kind, detail)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Another attempt would fail the same way: a missing template or address, a 4xx reply, a
    5xx SMTP reply. `status` is the receipt's: `bounced` when the recipient was refused,
    otherwise `failed` (which also dead-letters the action)."""

    def __init__(self, kind: str, detail: str, status: FailureStatus = "failed") -> None:
        super().__init__(kind, detail)
        self.status: FailureStatus = status


class TemplateError(PermanentDeliveryError):
    """The action's template is missing, incomplete or cannot render these params."""


class SenderConfigError(ConfigError):
    """The sender itself is misconfigured (bad credentials, no STARTTLS, missing settings).

    It stops the sender instead of failing every action: nothing is committed, nothing lost.
    """
