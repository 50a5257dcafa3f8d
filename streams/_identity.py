"""The identity agent: any identifier in, one canonical customer key out.

Channels key events by whatever they know (a cookie, an e-mail, a loyalty card). This agent
reads the raw touchpoints, keyed by the event's strongest identifier, and forwards each to the
customer topic keyed by the canonical customer. Everything it keeps is partition-local:

- `alias:X -> C` lives on X's partition: events keyed X are resolved there, without lookups
  elsewhere;
- `known:B -> [X, ...]` on B's partition: identifiers already seen together with B, so a link
  is sent once, not with every event;
- `links:C -> [X, ...]` on C's partition: every alias of C, so an erasure can unlink them;
- `erased:C` on C's partition: C was erased; a link to C that arrives later is undone.

When an event shows identifiers together (a login carries the customer id and the cookie; a
store purchase the loyalty card and the customer id), each other identifier X is linked to the
canonical customer C by a control record keyed X on the agent's own `polku.identity` topic
(co-partitioned with the touchpoints; channels' consumers of the touchpoints never see it).
On X's partition the alias is written and a `merge-into` control record asks the journey agent
to hand the profile kept under X until now (if any) over to C. An identifier that already
belongs to another customer stays there: the first link wins. Per-partition order makes this
safe: events for X that were forwarded before the link are processed before the hand-over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faust.types import Message

from schemas import CustomerErased, InvalidEventError, Touchpoint
from streams._decode_ahead import DecodedAhead
from streams._metrics import WorkerMetrics
from streams._staging import Event, Outbox, SetEvent, StagedTable, table_writer

log = logging.getLogger("polku.identity")

DeadLetter = Callable[[Message, str, str, Outbox], Awaitable[None]]
# (canonical customer, raw record, the record as read, its decoded touchpoint)
Deliver = Callable[[bytes, bytes, Message, Touchpoint], Awaitable[None]]

CONTROL_HEADER = "polku.control"
LINK = "link"
REMEMBER_ALIAS = "remember-alias"
FORGET = "forget"
UNLINK = "unlink"
MERGE_INTO = "merge-into"
ABSORB = "absorb"


def control_of(message: Message) -> str | None:
    """The control kind of a record, or None for a touchpoint."""
    headers: Any = message.headers or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == CONTROL_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def control_headers(kind: str) -> list[tuple[str, bytes]]:
    return [(CONTROL_HEADER, kind.encode())]


class IdentityProcessor:
    """Resolves and re-keys raw touchpoints; dead-letters what cannot be read."""

    def __init__(
        self,
        *,
        raw_topic: Any,
        identity_topic: Any,
        customer_topic: Any,
        aliases: Any,
        dead_letter: DeadLetter,
        metrics: WorkerMetrics,
        deliver: Deliver | None = None,
        outbox: Outbox | None = None,
        producer: Callable[[], Any] | None = None,
        decoded: DecodedAhead | None = None,
    ) -> None:
        """`deliver` hands a resolved touchpoint on; by default to the customer topic;
        `decoded`: the touchpoints of the batch decoded ahead (`Pipeline`)."""
        self._raw = raw_topic
        self._links = identity_topic
        self._customers = customer_topic
        self._aliases = StagedTable(aliases, table_writer(aliases, producer))
        self._dead_letter = dead_letter
        self._metrics = metrics
        self._deliver = deliver or self._to_customer_topic
        # not `outbox or Outbox()`: an outbox with nothing pending is falsy (`__len__`), and the
        # steps must share the one they are given
        self.outbox = outbox if outbox is not None else Outbox()
        self.decoded = decoded if decoded is not None else DecodedAhead()

    # a batch stage (`_staging.process_batch`): its alias writes are saved with the batch
    def begin(self, event: Event) -> None:
        self._aliases.event = event

    def discard(self) -> None:
        self._aliases.discard()  # the batch will be processed again from the old aliases

    async def save(self, set_event: SetEvent) -> None:
        started = time.perf_counter()
        await self._aliases.apply(set_event)
        self._metrics.phases.add("write", time.perf_counter() - started)

    async def handle(self, message: Message) -> None:
        control = control_of(message)
        if control is not None:
            await self._on_control(control, message.key or b"", message.value or b"")
            return
        raw = message.value or b""
        started = time.perf_counter()
        try:
            event = self.decoded.take(message)
        except InvalidEventError as exc:
            await self._dead_letter(message, "invalid_event", exc.reason, self.outbox)
            return
        self._metrics.phases.add("decode", time.perf_counter() - started)
        keys = event.customer.keys  # strongest first: `CustomerRef.key` is the first
        best = keys[0].encode()
        if message.key != best:
            # resolve on the partition of the event's strongest identifier
            self._metrics.rekeyed.inc()
            await self._send(self._raw, best, raw)
            return
        canonical = self.canonical(best)
        await self._link_others(best, keys, canonical, event)
        if isinstance(event, CustomerErased):
            await self._send(self._links, canonical, b"", control_headers(FORGET))
        await self._deliver(canonical, raw, message, event)

    async def _to_customer_topic(
        self, canonical: bytes, raw: bytes, _message: Message, _event: Touchpoint
    ) -> None:
        await self._send(self._customers, canonical, raw)

    def canonical(self, identifier: bytes) -> bytes:
        found = self._aliases.get(b"alias:" + identifier)
        return bytes(found) if found else identifier

    async def _link_others(
        self, best: bytes, keys: list[str], canonical: bytes, event: Touchpoint
    ) -> None:
        """Link the event's other identifiers (`keys`: all of them) to `canonical`."""
        if isinstance(event, CustomerErased):
            return
        others = [key for key in keys if key.encode() != best]
        if not others:
            return  # the event names one identifier (most do): nothing to link, nothing to read
        known = set(self._list(b"known:" + best))
        fresh = [key for key in others if key not in known]
        if not fresh:
            return
        for identifier in fresh:
            await self._send(self._links, identifier.encode(), canonical, control_headers(LINK))
        self._aliases[b"known:" + best] = orjson.dumps(sorted(known.union(fresh)))

    async def _on_control(self, kind: str, key: bytes, value: bytes) -> None:
        if kind == LINK:
            await self._link(key, value)
        elif kind == REMEMBER_ALIAS:
            await self._remember(key, value)
        elif kind == FORGET:
            await self._forget(key)
        elif kind == UNLINK:
            for table_key in (b"alias:" + key, b"known:" + key):
                if table_key in self._aliases:
                    del self._aliases[table_key]
        else:
            log.warning("unknown identity control record %r ignored", kind)

    async def _link(self, identifier: bytes, canonical: bytes) -> None:
        """Make `identifier` an alias of `canonical`, handing over any profile it had."""
        if canonical == identifier:
            return
        previous = self.canonical(identifier)
        if previous == canonical:
            return
        if previous != identifier:
            # already the alias of another customer: the first link wins, and two customer
            # records are never merged on a shared device or address without the CRM saying so
            log.warning("identity conflict: an identifier already belongs to another customer")
            return
        self._aliases[b"alias:" + identifier] = canonical
        await self._send(self._links, canonical, identifier, control_headers(REMEMBER_ALIAS))
        # the profile events for this identifier were kept under until now joins the canonical
        await self._send(self._customers, previous, canonical, control_headers(MERGE_INTO))
        log.info("identity linked; profile handed over to the canonical customer")

    async def _remember(self, canonical: bytes, alias: bytes) -> None:
        if b"erased:" + canonical in self._aliases:
            # the link was on its way when the customer was erased: undo it at once
            await self._send(self._links, alias, b"", control_headers(UNLINK))
            return
        aliases = set(self._list(b"links:" + canonical)) | {alias.decode()}
        self._aliases[b"links:" + canonical] = orjson.dumps(sorted(aliases))

    async def _forget(self, canonical: bytes) -> None:
        """Erasure: every alias of the customer is unlinked where it lives. Only the fact of the
        erasure stays, so that links still in flight are undone when they arrive."""
        for alias in self._list(b"links:" + canonical):
            await self._send(self._links, alias.encode(), b"", control_headers(UNLINK))
        for table_key in (b"links:" + canonical, b"known:" + canonical, b"alias:" + canonical):
            if table_key in self._aliases:
                del self._aliases[table_key]
        self._aliases[b"erased:" + canonical] = b"1"

    def _list(self, key: bytes) -> list[str]:
        stored = self._aliases.get(key)
        return list(orjson.loads(stored)) if stored else []

    async def _send(
        self, topic: Any, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        # acked with the whole batch, before its offsets can be committed
        await self.outbox.send(topic, key, value, headers)
