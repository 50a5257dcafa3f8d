"""The sender's durable memory of actions: how often tried, what came of it, what is left to do.

An SQLite file in WAL mode with `synchronous=FULL`: a recorded outcome survives a crash of the
process and of the machine, so it is safe to commit the Kafka offset after it. The store is what
makes redelivered actions (after a crash, a rebalance, a worker re-emitting) harmless.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from streams._errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    action_id   TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,
    detail      TEXT,
    error_kind  TEXT,
    receipt     BLOB,
    finalized   INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS actions_by_age ON actions (updated_at);
"""


@dataclass(frozen=True)
class ActionRecord:
    """What the store knows of one action.

    `outcome` is set once the action was delivered or given up on; `finalized` once its
    receipt (and dead letter, if any) were acked by the broker.
    """

    action_id: str
    attempts: int
    outcome: str | None
    detail: str | None
    error_kind: str | None
    receipt: bytes | None
    finalized: bool


class DedupeStore:
    """`DedupeStore(path)`: one file per sender group; use from one thread (the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the sender's dedupe store {path}: {exc}") from exc
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the outcome must be on disk before the offset that covers it is committed
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @property
    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def get(self, action_id: str) -> ActionRecord | None:
        row = self._db.execute(
            "SELECT action_id, attempts, outcome, detail, error_kind, receipt, finalized"
            " FROM actions WHERE action_id = ?",
            (action_id,),
        ).fetchone()
        if row is None:
            return None
        return ActionRecord(
            action_id=row[0],
            attempts=row[1],
            outcome=row[2],
            detail=row[3],
            error_kind=row[4],
            receipt=row[5],
            finalized=bool(row[6]),
        )

    def begin_attempt(self, action_id: str) -> int:
        """Count one more delivery attempt (before it starts) and return its number, from 1.

        Counted durably, so `max_attempts` holds across restarts too.
        """
        row = self._db.execute(
            "INSERT INTO actions (action_id, attempts, updated_at) VALUES (?, 1, ?)"
            " ON CONFLICT (action_id) DO UPDATE"
            " SET attempts = attempts + 1, updated_at = excluded.updated_at"
            " RETURNING attempts",
            (action_id, _now()),
        ).fetchone()
        return int(row[0])

    def record_outcome(
        self,
        action_id: str,
        outcome: str,
        *,
        detail: str | None,
        receipt: bytes,
        error_kind: str | None = None,
    ) -> None:
        """Remember the final outcome and the receipt to publish; the action is never re-sent."""
        self._db.execute(
            "INSERT INTO actions (action_id, outcome, detail, error_kind, receipt, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (action_id) DO UPDATE SET outcome = excluded.outcome,"
            " detail = excluded.detail, error_kind = excluded.error_kind,"
            " receipt = excluded.receipt, updated_at = excluded.updated_at",
            (action_id, outcome, detail, error_kind, receipt, _now()),
        )

    def finalize(self, action_id: str) -> None:
        """The receipt (and dead letter) are acked: nothing about this action is left to do.

        The receipt is dropped then: it names the customer, and all a duplicate needs to be
        recognised is the (opaque) action id and its outcome. What the store keeps for the
        retention window holds no personal data, so an erasure has nothing to reach here.
        """
        self._db.execute(
            "UPDATE actions SET finalized = 1, receipt = NULL, updated_at = ? WHERE action_id = ?",
            (_now(), action_id),
        )

    def prune(self, older_than: timedelta) -> int:
        """Forget finished actions not touched for `older_than`; return how many.

        The window must exceed how late a duplicate can arrive (topic retention is a safe bound).
        """
        cutoff = (datetime.now(UTC) - older_than).isoformat()
        cursor = self._db.execute(
            "DELETE FROM actions WHERE finalized = 1 AND updated_at < ?", (cutoff,)
        )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DedupeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _now() -> str:
    return datetime.now(UTC).isoformat()
