"""Feedback in the ledger: the latest flag per task and author, secrets masked, pruned with its
task, migrated up and down; task ids found by a unique prefix. Both backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_decision, record_task
from tierwise.task import Task

T0 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url, env={"TIERWISE_TEST_API_KEY": "s3cr3t-value-123"}) as book:
        yield book


def test_the_latest_flag_per_task_and_author_stands(ledger: Ledger) -> None:
    task, _ = record_task(ledger)
    first = ledger.record_feedback(task.id, "wrong", author="ana", note="total is off")
    again = ledger.record_feedback(task.id, "wrong", author="ana", note="total is off")
    other = ledger.record_feedback(task.id, "cheaper_would_do", author="bo")
    changed = ledger.record_feedback(task.id, "needed_frontier", author="ana")
    assert first is not None and first.change == "created"
    assert again is not None and again.change == "unchanged"
    assert other is not None and other.change == "created"
    assert changed is not None and changed.change == "replaced"
    stored = ledger.feedback_of(task.id)
    assert [(f.author, f.flag, f.note) for f in stored] == [
        ("ana", "needed_frontier", None),
        ("bo", "cheaper_would_do", None),
    ]
    assert stored[0].created_at <= stored[0].updated_at


def test_notes_are_stored_with_secrets_masked(ledger: Ledger) -> None:
    task, _ = record_task(ledger)
    note = "it echoed sk-ant-api03-abcdefghijklmnop and s3cr3t-value-123"
    stored = ledger.record_feedback(task.id, "wrong", author="ana", note=note)
    assert stored is not None and stored.note is not None
    assert "sk-ant" not in stored.note and "s3cr3t" not in stored.note
    assert "[redacted]" in stored.note


@pytest.mark.parametrize(
    ("flag", "author", "note", "message"),
    [
        ("bad", "ana", None, "flag must be one of wrong, needed_frontier, cheaper_would_do"),
        ("wrong", " ", None, "author"),
        ("wrong", "ana", "x" * 4001, "note must be at most 4000"),
    ],
)
def test_bad_feedback_is_refused_and_changes_nothing(
    ledger: Ledger, flag: str, author: str, note: str | None, message: str
) -> None:
    task, _ = record_task(ledger)
    with pytest.raises(ValueError, match=message):
        ledger.record_feedback(task.id, flag, author=author, note=note)
    assert ledger.feedback_of(task.id) == []


def test_an_unknown_task_gets_none(ledger: Ledger) -> None:
    assert ledger.record_feedback("nope", "wrong", author="ana") is None


def test_pruning_a_task_prunes_its_feedback(ledger_url: str) -> None:
    clock = [T0]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        old, _ = record_task(book)
        book.record_feedback(old.id, "wrong", author="ana")
        clock[0] = T0 + timedelta(days=3)
        new, _ = record_task(book)
        book.record_feedback(new.id, "wrong", author="ana")
        result = book.prune((T0 + timedelta(days=1)).date())
        assert result.tasks == 1
        assert book.feedback_of(old.id) == [] and book.task(old.id) is None
        assert [f.flag for f in book.feedback_of(new.id)] == ["wrong"]


def test_migration_0004_goes_down_and_up(
    ledger_url: str, downgrade: Callable[[str, str], None], raw_sql: Callable[..., Any]
) -> None:
    open_ledger(ledger_url).close()
    downgrade(ledger_url, "0003")
    assert raw_sql(ledger_url, "SELECT version_num FROM alembic_version") == [("0003",)]
    with open_ledger(ledger_url) as book:  # migrates up again
        task, _ = record_task(book)
        assert book.record_feedback(task.id, "wrong", author="ana") is not None


def _task(book: Ledger, task_id: str) -> None:
    book.record_policy_revision(POLICY_REVISION, "{}", None)
    task = Task.create("extract", "x").with_(id=task_id)
    book.begin_task(
        task,
        make_decision("extract"),
        policy_revision=POLICY_REVISION,
        role="live",
        store_content=False,
    )


def test_tasks_are_found_by_id_or_a_unique_prefix(ledger: Ledger) -> None:
    for task_id in ("abc123", "abc456", "abd_x", "abd%y"):
        _task(ledger, task_id)
    assert ledger.task_ids("abc123") == ["abc123"]
    assert ledger.task_ids("abc") == ["abc123", "abc456"]
    assert ledger.task_ids("abc4") == ["abc456"]
    assert ledger.task_ids("abd_") == ["abd_x"]  # LIKE wildcards are literal characters here
    assert ledger.task_ids("abd%") == ["abd%y"]
    assert ledger.task_ids("%") == [] and ledger.task_ids("  ") == []
