"""Render an action's template: one file per (channel, template), `<channel>/<template>.j2`.

A template file defines the blocks its channel needs (`CHANNEL_BLOCKS`): an email has `subject`,
`text` and `html`; an SMS `text`; push, staff tasks and offers `title` and `text`. Adding a
template for a new journey step is adding that one file.

The `html` block is rendered with autoescaping on, every other block with it off: the same file
compiled twice, because escaping is right for HTML and wrong for plain text (a product called
"Salt & Pepper" must not read "Salt &amp; Pepper" in an SMS). Data is never evaluated as a
template either way, and the sandbox keeps templates from reaching into Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas import Action, ContactChannel
from streams.senders._contacts import Contact
from streams.senders._errors import TemplateError
from streams.senders._redact import redact

BUILT_IN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CHANNEL_BLOCKS: Mapping[ContactChannel, tuple[str, ...]] = {
    ContactChannel.EMAIL: ("subject", "text", "html"),
    ContactChannel.SMS: ("text",),
    ContactChannel.PUSH: ("title", "text"),
    ContactChannel.STAFF_TASK: ("title", "text"),
    ContactChannel.OFFER: ("title", "text"),
    ContactChannel.WEBHOOK: ("text",),
}
_ESCAPED_BLOCKS = frozenset({"html"})
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
_SUFFIX = ".j2"
_BLANK_LINES = re.compile(r"\n{3,}")
# what one `*` or `**` in a template may build: ample for any message, far from a memory bomb
MAX_REPEATED_LENGTH = 100_000
MAX_POWER_BITS = 4_096


class TemplateItem(BaseModel):
    """A product line as templates see it; extra keys (an image URL, ...) stay available."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    sku: str | None = None
    quantity: Annotated[int, Field(ge=1)] = 1
    unit_price: Decimal | None = None
    size: str | None = None

    @property
    def line_total(self) -> Decimal | None:
        return None if self.unit_price is None else self.unit_price * self.quantity


_ITEMS = TypeAdapter(list[TemplateItem])


@dataclass(frozen=True)
class RenderedMessage:
    """Rendered blocks by name (`subject`, `text`, `html`, `title`)."""

    channel: ContactChannel
    template: str
    parts: Mapping[str, str]

    def __getitem__(self, block: str) -> str:
        return self.parts[block]


class TemplateRenderer:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or BUILT_IN_TEMPLATES
        self._plain = _environment(self.directory, autoescape=False)
        self._escaped = _environment(self.directory, autoescape=True)

    def available(self) -> set[tuple[ContactChannel, str]]:
        """Every (channel, template) with a file; names starting with `_` are shared parts."""
        found = set()
        for channel in ContactChannel:
            folder = self.directory / channel.value
            for path in folder.glob(f"*{_SUFFIX}") if folder.is_dir() else ():
                if not path.name.startswith("_"):
                    found.add((channel, path.name.removesuffix(_SUFFIX)))
        return found

    def render(self, action: Action, contact: Contact) -> RenderedMessage:
        """Every block the action's channel needs, or `TemplateError` saying what is wrong."""
        path = _template_path(action)
        variables = _variables(action, contact)
        parts = {}
        for block in CHANNEL_BLOCKS[action.channel]:
            environment = self._escaped if block in _ESCAPED_BLOCKS else self._plain
            parts[block] = _render_block(environment, path, block, variables)
        if "subject" in parts:
            parts["subject"] = " ".join(parts["subject"].split())  # one line: it is a header
        return RenderedMessage(action.channel, action.template, parts)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `*` and `**` bounded in what they may build.

    The sandbox already caps `range`; without this, `{{ '★' * params.rating }}` with a rating of
    10**9 from an event would take gigabytes, and `2 ** 10**9` the CPU for minutes.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repetition(left, right)
            _check_repetition(right, left)
        else:
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)


def _check_repetition(sequence: Any, count: Any) -> None:
    if not (isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int)):
        return
    if len(sequence) * count > MAX_REPEATED_LENGTH:
        raise SecurityError(
            f"'*' would build {len(sequence) * count:,} items "
            f"(at most {MAX_REPEATED_LENGTH:,} in a template)"
        )


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) <= 1:
        return
    if exponent * abs(base).bit_length() > MAX_POWER_BITS:
        raise SecurityError(f"'**' result too large (over {MAX_POWER_BITS:,} bits in a template)")


def _environment(directory: Path, *, autoescape: bool) -> jinja2.Environment:
    environment = BoundedSandbox(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the action, not the mail
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    environment.filters["money"] = money
    environment.filters["safe_url"] = safe_url
    environment.filters["as_items"] = _items
    return environment


def _template_path(action: Action) -> str:
    if not _TEMPLATE_NAME.fullmatch(action.template):
        raise TemplateError("template_missing", f"{action.template!r} is not a template name")
    return f"{action.channel.value}/{action.template}{_SUFFIX}"


def _render_block(
    environment: jinja2.Environment, path: str, block: str, variables: dict[str, Any]
) -> str:
    try:
        template = environment.get_template(path)
        render = template.blocks.get(block)
        if render is None:
            raise TemplateError("template_incomplete", f"{path} has no block {block!r}")
        text = "".join(render(template.new_context(variables)))
    except jinja2.TemplateNotFound:
        raise TemplateError("template_missing", f"no template {path}") from None
    except jinja2.TemplateError as exc:  # SecurityError included: the sandbox said no
        detail = redact(f"{path}, block {block!r}: {exc.message or type(exc).__name__}")
        raise TemplateError("template_error", detail) from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # what template expressions raise as Python (the sandbox's range limit, 1/0, 1 + "a"):
        # one bad template must fail its actions, not crash the sender on every restart
        detail = redact(f"{path}, block {block!r}: {type(exc).__name__}: {exc}")
        raise TemplateError("template_error", detail) from None
    if block not in _ESCAPED_BLOCKS:
        text = _BLANK_LINES.sub("\n\n", text)  # template logic leaves gaps in plain text
    return text.strip() + ("\n" if block in ("text", "html") else "")


def _variables(action: Action, contact: Contact) -> dict[str, Any]:
    params = action.params
    return {
        "action": action,
        "params": params,
        "first_name": contact.first_name,
        "items": _items(params.get("items")),
        "currency": params.get("currency"),
    }


def _items(value: Any) -> list[TemplateItem]:
    if value is None:
        return []
    try:
        return _ITEMS.validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"items.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise TemplateError("bad_params", problems) from None


def money(value: Any, currency: Any = None) -> str:
    """`89.9` -> `89.90`, with the currency code after it when there is one."""
    try:
        amount = f"{Decimal(str(value)).quantize(Decimal('0.01'))}"
    except (InvalidOperation, ValueError):
        amount = str(value)
    return f"{amount} {currency}" if isinstance(currency, str) and currency else amount


def safe_url(value: Any) -> str:
    """The URL if it is http(s), else "": a `javascript:` link must never reach a message."""
    if not isinstance(value, str):
        return ""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return ""
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else ""
