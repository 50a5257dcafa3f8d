"""The sender SDK: deliver each action of one action topic once, and say how it went.

Per action, in this order:
1. decode it (undecodable bytes are dead-lettered, with the reason);
2. look its `action_id` up in the durable dedupe store: an action with a recorded outcome is
   not delivered again (its receipt is re-published if that had not been acked yet);
3. if its `not_before` is ahead, pause its partition and come back to it then (bounded steps);
4. render and address it, then deliver it, retrying transient failures with backoff (and the
   provider's Retry-After) up to `max_attempts`;
5. record the outcome durably, then publish the `message.receipt` touchpoint (keyed by the
   customer) and, for a failure, the dead letter, and wait for the broker's acks;
6. only then may the offset be committed (in batches, at the commit interval, on rebalance and
   on shutdown).

A crash between 4 and 5 can repeat a delivery (the provider's idempotency key or the email's
Message-ID, both the action id, let the far side drop it); a crash anywhere after 5 cannot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from schemas import (
    Action,
    ContactChannel,
    CustomerRef,
    MessageReceipt,
    ReceiptPayload,
    SourceChannel,
    decode_action,
    describe_validation_error,
    encode,
    stable_id,
)
from streams._errors import BrokerError
from streams._producer import TouchpointProducer
from streams._settings import Settings
from streams.senders._backoff import RetryPolicy
from streams.senders._errors import PermanentDeliveryError, TransientDeliveryError
from streams.senders._metrics import SenderMetrics
from streams.senders._redact import redact
from streams.senders._store import DedupeStore

log = logging.getLogger("polku.sender")

Clock = Callable[[], datetime]
ReceiptStatus = Literal["sent", "delivered", "bounced", "failed"]
PreparedT = TypeVar("PreparedT")
_BATCH = 100
_PARTITION = tuple[str, int]
_SOURCE_CHANNEL = {
    ContactChannel.EMAIL: SourceChannel.EMAIL,
    ContactChannel.SMS: SourceChannel.SMS,
    ContactChannel.PUSH: SourceChannel.PUSH,
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Delivered:
    """A successful delivery: `sent` when the provider accepted it, `delivered` when it says
    the recipient has it."""

    status: Literal["sent", "delivered"] = "sent"
    detail: str | None = None


class ChannelSender(Protocol[PreparedT]):
    """What a channel plugs into the loop: `prepare` renders and addresses an action (pure, may
    raise `PermanentDeliveryError`), `deliver` does the I/O (may raise a `DeliveryError`)."""

    @property
    def channel(self) -> ContactChannel: ...

    @property
    def attempt_timeout_seconds(self) -> float: ...

    def prepare(self, action: Action) -> PreparedT: ...

    async def deliver(self, prepared: PreparedT) -> Delivered: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: ReceiptStatus
    detail: str | None
    attempts: int
    error_kind: str | None = None  # set: the action goes to the dead-letter topic too


class _StopRequestedError(Exception):
    """Shutdown was asked for while waiting to retry: leave the action uncommitted."""


class SenderLoop:
    """`await SenderLoop(settings, sender).run()` until `stop()` (wired to SIGTERM by the CLI)."""

    def __init__(
        self,
        settings: Settings,
        sender: ChannelSender[Any],
        *,
        metrics: SenderMetrics | None = None,
        policy: RetryPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._settings = settings
        self._sender = sender
        self._channel = sender.channel.value
        self._topic = settings.action_topic(sender.channel)
        self._metrics = metrics or SenderMetrics(channels=[sender.channel])
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._ready: dict[_PARTITION, int] = {}  # next offset to commit, per partition
        self._deferred: dict[_PARTITION, float] = {}  # paused partition -> monotonic resume time
        self._last_commit = time.monotonic()
        self._store = DedupeStore(settings.sender_store_path(sender.channel))
        self._producer = TouchpointProducer(
            settings, message_timeout_seconds=settings.sender_receipt_timeout_seconds
        )
        self._consumer = Consumer(self._consumer_config())

    @property
    def metrics(self) -> SenderMetrics:
        return self._metrics

    def stop(self) -> None:
        """Finish the action in hand (an interrupted retry wait leaves it uncommitted), commit,
        leave the group, flush the producer."""
        self._stopping.set()

    async def run(self) -> None:
        pruned = self._store.prune(timedelta(days=self._settings.sender_dedupe_retention_days))
        log.info("sender %s on %s (%d old records pruned)", self._channel, self._topic, pruned)
        self._consumer.subscribe([self._topic], on_assign=_log_assign, on_revoke=self._on_revoke)
        try:
            while not self._stopping.is_set():
                self._resume_due_partitions()
                messages = await asyncio.to_thread(
                    self._consumer.consume, _BATCH, self._poll_timeout()
                )
                await self._handle_batch(messages)
                await self._commit(due_only=True)
        except _StopRequestedError:
            log.info("stopping during a retry wait; that action stays uncommitted")
        finally:
            await self._close()

    async def _handle_batch(self, messages: list[Message]) -> None:
        for message in messages:
            if self._stopping.is_set():
                return
            error = message.error()
            if error is not None:
                _check_consumer_error(error)
                continue
            if _partition_of(message) in self._deferred:
                continue  # fetched before the pause; it comes again after the resume
            await self._handle(message)

    async def _handle(self, message: Message) -> None:
        try:
            action = decode_action(message.value() or b"")
        except ValidationError as exc:
            invalid = Outcome("failed", _invalid(exc), 0, "invalid_action")
            await self._publish(message, None, invalid)
            self._done(message)
            return
        if action.channel != self._sender.channel:
            wrong = f"a {action.channel.value} action on the {self._channel} topic"
            await self._finish(message, action, Outcome("failed", wrong, 0, "wrong_channel"))
            return
        if await self._already_finished(message, action):
            self._done(message)
            return
        if self._defer_if_early(message, action):
            return
        await self._finish(message, action, await self._deliver(action))

    async def _already_finished(self, message: Message, action: Action) -> bool:
        record = self._store.get(action.action_id)
        if record is None or record.outcome is None:
            return False
        self._metrics.duplicates.labels(self._channel).inc()
        log.info("action %s already %s: not delivered again", action.action_id, record.outcome)
        if not record.finalized and record.receipt is not None:
            # an outcome is recorded with its receipt, which is dropped once acked (finalized)
            status = cast(ReceiptStatus, record.outcome)
            outcome = Outcome(status, record.detail, record.attempts, record.error_kind)
            await self._publish(message, action, outcome, record.receipt)
        return True

    def _defer_if_early(self, message: Message, action: Action) -> bool:
        """Pause the partition until `not_before` (re-checked at least every recheck interval),
        rewound to this action, so it and everything after it for these customers wait."""
        early = (action.not_before - self._clock()).total_seconds()
        if early <= 0:
            return False
        topic, partition = _partition_of(message)
        here = TopicPartition(topic, partition, _offset_of(message))
        self._consumer.pause([here])
        self._consumer.seek(here)
        wait = min(early, self._settings.sender_defer_recheck_seconds)
        self._deferred[(topic, partition)] = time.monotonic() + wait
        self._metrics.deferred.labels(self._channel).inc()
        log.info("action %s is due at %s: waiting %.1fs", action.action_id, action.not_before, wait)
        return True

    def _resume_due_partitions(self) -> None:
        now = time.monotonic()
        due = [key for key, resume_at in self._deferred.items() if resume_at <= now]
        if due:
            self._consumer.resume([TopicPartition(topic, partition) for topic, partition in due])
            for key in due:
                del self._deferred[key]

    def _poll_timeout(self) -> float:
        timeout = self._settings.sender_poll_seconds
        if self._deferred:
            timeout = min(timeout, min(self._deferred.values()) - time.monotonic())
        return max(timeout, 0.01)

    async def _deliver(self, action: Action) -> Outcome:
        try:
            prepared = self._sender.prepare(action)
        except PermanentDeliveryError as exc:
            self._metrics.attempts.labels(self._channel, "permanent").inc()
            return _failure(exc, attempts=0)
        while True:
            attempt = self._store.begin_attempt(action.action_id)
            outcome = await self._attempt(prepared, attempt)
            if outcome is not None:
                return outcome

    async def _attempt(self, prepared: Any, attempt: int) -> Outcome | None:
        """One delivery attempt: its outcome, or None after waiting to try again."""
        started = time.perf_counter()
        try:
            delivered = await self._sender.deliver(prepared)
        except TransientDeliveryError as exc:
            self._metrics.attempts.labels(self._channel, "transient").inc()
            if not self._policy.may_retry(attempt):
                detail = f"gave up after {attempt} attempts: {exc.kind}: {exc.detail}"
                return Outcome("failed", detail, attempt, "retries_exhausted")
            self._metrics.retries.labels(self._channel).inc()
            delay = self._policy.delay(attempt, exc.retry_after)
            log.info("attempt %d failed (%s), next in %.1fs", attempt, redact(str(exc)), delay)
            await self._wait(delay)
            return None
        except PermanentDeliveryError as exc:
            self._metrics.attempts.labels(self._channel, "permanent").inc()
            return _failure(exc, attempt)
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.delivery_seconds.labels(self._channel).observe(elapsed)
        self._metrics.attempts.labels(self._channel, "ok").inc()
        return Outcome(delivered.status, delivered.detail, attempt)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _StopRequestedError

    async def _finish(self, message: Message, action: Action, outcome: Outcome) -> None:
        """Record the outcome durably, publish receipt (and dead letter), mark the offset."""
        receipt = encode(self._receipt(action, outcome))
        self._store.record_outcome(
            action.action_id,
            outcome.status,
            detail=outcome.detail,
            receipt=receipt,
            error_kind=outcome.error_kind,
        )
        self._metrics.outcomes.labels(self._channel, outcome.status).inc()
        log.info("action %s: %s (attempts: %d)", action.action_id, outcome.status, outcome.attempts)
        await self._publish(message, action, outcome, receipt)
        self._done(message)

    def _receipt(self, action: Action, outcome: Outcome) -> MessageReceipt:
        # the id depends on the action and status alone: a re-published receipt is recognisable
        return MessageReceipt(
            event_id=f"receipt-{stable_id(action.action_id, outcome.status)}",
            occurred_at=self._clock(),
            channel=_SOURCE_CHANNEL.get(action.channel, SourceChannel.SYSTEM),
            customer=CustomerRef(customer_id=action.customer_id),
            payload=ReceiptPayload(
                action_id=action.action_id,
                channel=action.channel,
                status=outcome.status,
                detail=outcome.detail,
            ),
        )

    async def _publish(
        self,
        message: Message,
        action: Action | None,
        outcome: Outcome,
        receipt: bytes | None = None,
    ) -> None:
        acks = []
        if action is not None and receipt is not None:
            acks.append(self._producer.submit_raw(action.customer_id.encode(), receipt))
        if outcome.error_kind is not None:
            acks.append(self._dead_letter(message, action, outcome))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(ack) for ack in acks)),
                self._settings.sender_receipt_timeout_seconds + 5,
            )
        except TimeoutError:
            raise BrokerError("the broker did not ack a receipt in time; stopping") from None
        if action is not None:
            self._store.finalize(action.action_id)

    def _dead_letter(self, message: Message, action: Action | None, outcome: Outcome) -> Any:
        kind = outcome.error_kind or "failed"
        log.warning(
            "dead-lettered %s[%s]@%s (%s): %s",
            message.topic(),
            message.partition(),
            message.offset(),
            kind,
            redact(outcome.detail or ""),
        )
        headers = [
            ("polku.error.kind", kind.encode()),
            ("polku.error.reason", redact(outcome.detail or kind).encode()),
            ("polku.error.topic", str(message.topic()).encode()),
            ("polku.error.partition", str(message.partition()).encode()),
            ("polku.error.offset", str(message.offset()).encode()),
            ("polku.error.at", self._clock().isoformat().encode()),
            ("polku.error.attempts", str(outcome.attempts).encode()),
        ]
        if action is not None:
            headers.append(("polku.action.id", action.action_id.encode()))
        self._metrics.dead_lettered.labels(self._channel, kind).inc()
        return self._producer.submit_raw(
            message.key(),
            message.value() or b"",
            topic=self._settings.dead_letter_topic,
            headers=headers,
        )

    def _done(self, message: Message) -> None:
        self._ready[_partition_of(message)] = _offset_of(message) + 1

    async def _commit(self, *, due_only: bool) -> None:
        interval = self._settings.sender_commit_interval_seconds
        if not self._ready or (due_only and time.monotonic() - self._last_commit < interval):
            return
        offsets = dict(self._ready)
        try:
            await asyncio.to_thread(
                self._consumer.commit, offsets=_topic_partitions(offsets), asynchronous=False
            )
        except KafkaException as exc:
            # e.g. a rebalance in progress: the offsets stay ready and go with the next commit
            log.warning("offset commit failed, will retry: %s", exc)
            return
        self._last_commit = time.monotonic()
        for key, offset in offsets.items():
            if self._ready.get(key) == offset:
                del self._ready[key]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs inside `consume`: commit what is done on these partitions before they go."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        done = {key: offset for key, offset in self._ready.items() if key in revoked}
        paused = [TopicPartition(*key) for key in self._deferred if key in revoked]
        try:
            if done:
                consumer.commit(offsets=_topic_partitions(done), asynchronous=False)
            if paused:
                consumer.resume(paused)
        except KafkaException as exc:
            log.warning("commit on revoke failed (the next owner may repeat a few): %s", exc)
        for key in revoked:
            self._ready.pop(key, None)
            self._deferred.pop(key, None)

    def _consumer_config(self) -> dict[str, str | int | float | bool]:
        settings = self._settings
        # one action may take every attempt and wait: the group must not evict us meanwhile
        worst = self._policy.worst_case_seconds(self._sender.attempt_timeout_seconds)
        worst += settings.sender_receipt_timeout_seconds + 60
        return settings.kafka_client_config() | {
            "group.id": settings.sender_group(self._sender.channel),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
            "heartbeat.interval.ms": int(settings.heartbeat_interval_seconds * 1000),
            "max.poll.interval.ms": int(max(worst, 300) * 1000),
        }

    async def _close(self) -> None:
        try:
            await self._commit(due_only=False)
            await asyncio.to_thread(self._consumer.close)
        finally:
            try:
                self._producer.close()
            finally:
                await self._sender.aclose()
                self._store.close()
        log.info("sender %s stopped", self._channel)


def _failure(exc: PermanentDeliveryError, attempts: int) -> Outcome:
    dead_letter = exc.kind if exc.status == "failed" else None
    return Outcome(exc.status, f"{exc.kind}: {exc.detail}", attempts, dead_letter)


def _invalid(exc: ValidationError) -> str:
    return f"not a valid action: {describe_validation_error(exc)}"


def _topic_partitions(offsets: dict[_PARTITION, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, part, offset) for (topic, part), offset in offsets.items()]


def _partition_of(message: Message) -> _PARTITION:
    topic, partition = message.topic(), message.partition()
    assert topic is not None, "a consumed message has a topic"
    assert partition is not None, "a consumed message has a partition"
    return topic, partition


def _offset_of(message: Message) -> int:
    offset = message.offset()
    assert offset is not None, "a consumed message has an offset"
    return offset


def _check_consumer_error(error: KafkaError) -> None:
    if error.fatal():
        raise BrokerError(f"the consumer failed: {error.str()}")
    log.warning("consumer: %s", error.str())


def _log_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))
