"""Keep personal data out of logs, dead-letter reasons and receipt details."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
# 7 to 15 digits, single spaces, dashes or parentheses between them: not "451 4.7.1"
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d(?:[ ()-]{0,2}\d){6,14}(?![\w.])")
_MAX_LENGTH = 300


def redact(text: str) -> str:
    """`text` with email addresses and phone numbers masked, cut to a readable length.

    Provider replies often quote the recipient ("550 <aino@example.com>: no such user"); the
    reason is worth keeping, the address is not.
    """
    masked = _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))
    masked = " ".join(masked.split())
    if len(masked) > _MAX_LENGTH:
        return masked[: _MAX_LENGTH - 1] + "…"
    return masked
