"""Where an action's recipient is: polku's actions name a customer, not an address.

The reference senders look in three places, first hit wins per field: the action's own params
(a journey may pass `email: "{{ trigger.customer.email }}"`), a contacts file kept by the
deployment, and the customer key itself when it is an address (`email:...`, `phone:...`, which
is how polku keys customers known only by that identifier). A production sender plugs its CRM
in by implementing `ContactDirectory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas import Action, describe_validation_error
from streams._errors import ConfigError


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = None
    first_name: Annotated[str, Field(max_length=200)] | None = None

    def merged_over(self, fallback: Contact) -> Contact:
        """This contact, with its missing fields taken from `fallback`."""
        own = self.model_dump(exclude_none=True)
        return Contact.model_validate(fallback.model_dump(exclude_none=True) | own)


class ContactDirectory(Protocol):
    def lookup(self, action: Action) -> Contact: ...


_CONTACTS_FILE = TypeAdapter(dict[str, Contact])
_KEY_PREFIXES = {"email:": "email", "phone:": "phone"}


class ContactBook:
    """Params, then a contacts file, then the customer key (see the module docstring)."""

    def __init__(self, known: dict[str, Contact] | None = None) -> None:
        self._known = known or {}

    @classmethod
    def from_file(cls, path: Path | None) -> ContactBook:
        if path is None:
            return cls()
        try:
            document = orjson.loads(path.read_bytes())
            return cls(_CONTACTS_FILE.validate_python(document))
        except OSError as exc:
            raise ConfigError(f"cannot read the contacts file {path}: {exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"the contacts file {path} is not JSON: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(
                f"the contacts file {path} is not {{customer_id: contact}}: "
                f"{describe_validation_error(exc)}"
            ) from exc

    def lookup(self, action: Action) -> Contact:
        contact = _from_params(action).merged_over(self._known.get(action.customer_id, Contact()))
        return contact.merged_over(_from_key(action.customer_id))


def _from_params(action: Action) -> Contact:
    fields = {
        name: value
        for name in ("email", "phone", "first_name")
        if isinstance(value := action.params.get(name), str) and value
    }
    try:
        return Contact.model_validate(fields)
    except ValidationError:
        # a malformed address in params is as good as none; the file or key may still have one
        return Contact()


def _from_key(customer_id: str) -> Contact:
    for prefix, field in _KEY_PREFIXES.items():
        if customer_id.startswith(prefix):
            try:
                return Contact.model_validate({field: customer_id.removeprefix(prefix)})
            except ValidationError:
                return Contact()
    return Contact()
