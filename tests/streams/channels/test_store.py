"""The dedupe store: durable across reopen (a restart), WAL mode, attempts and outcomes."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from streams import ConfigError
from streams.senders import DedupeStore


def test_it_runs_in_wal_mode(tmp_path: Path) -> None:
    with DedupeStore(tmp_path / "s.sqlite3") as store:
        assert store.journal_mode == "wal"


def test_an_unknown_action_has_no_record(tmp_path: Path) -> None:
    with DedupeStore(tmp_path / "s.sqlite3") as store:
        assert store.get("a" * 32) is None


def test_attempts_are_counted_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with DedupeStore(path) as store:
        assert store.begin_attempt("a1") == 1
        assert store.begin_attempt("a1") == 2
        assert store.begin_attempt("b2") == 1
    with DedupeStore(path) as reopened:
        assert reopened.begin_attempt("a1") == 3
        record = reopened.get("a1")
        assert record is not None
        assert record.attempts == 3
        assert record.outcome is None


def test_a_recorded_outcome_survives_a_restart_and_is_finalized_once_published(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    with DedupeStore(path) as store:
        store.begin_attempt("a1")
        store.record_outcome("a1", "sent", detail=None, receipt=b"{receipt}")
    with DedupeStore(path) as reopened:
        record = reopened.get("a1")
        assert record is not None
        assert (record.outcome, record.receipt, record.finalized) == ("sent", b"{receipt}", False)
        reopened.finalize("a1")
    with DedupeStore(path) as again:
        record = again.get("a1")
        assert record is not None
        assert record.finalized
        assert (record.attempts, record.outcome) == (1, "sent")
        # the receipt names the customer: once acked it is not kept for the retention window
        assert record.receipt is None


def test_a_failure_keeps_its_kind_and_detail(tmp_path: Path) -> None:
    with DedupeStore(tmp_path / "s.sqlite3") as store:
        store.record_outcome(
            "a1", "failed", detail="template_missing: no template", receipt=b"r", error_kind="tm"
        )
        record = store.get("a1")
        assert record is not None
        assert (record.attempts, record.error_kind, record.detail) == (
            0,
            "tm",
            "template_missing: no template",
        )


def test_prune_forgets_only_finished_old_records(tmp_path: Path) -> None:
    with DedupeStore(tmp_path / "s.sqlite3") as store:
        store.record_outcome("done", "sent", detail=None, receipt=b"r")
        store.finalize("done")
        store.record_outcome("unpublished", "sent", detail=None, receipt=b"r")
        store.begin_attempt("pending")
        assert store.prune(timedelta(days=1)) == 0
        assert store.prune(timedelta(seconds=-1)) == 1
        assert store.get("done") is None
        assert store.get("unpublished") is not None
        assert store.get("pending") is not None


def test_an_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="dedupe store"):
        DedupeStore(blocker / "s.sqlite3")


def test_the_file_is_plain_sqlite_for_operators(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with DedupeStore(path) as store:
        store.record_outcome("a1", "bounced", detail="550", receipt=b"r")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT outcome FROM actions").fetchall() == [("bounced",)]
