"""`ledger check` sees what a dead process leaves: held reservations and tasks never finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_decision, record_task
from tierwise.task import Task

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def test_a_reservation_held_after_its_task_ended_is_reported(ledger_url: str) -> None:
    with open_ledger(ledger_url, now=lambda: T0) as book:
        task, _ = record_task(book)
        held = book.reserve(task.id, {"task:x": Decimal(1)}, Decimal("0.2"))
        assert book.integrity_check() == [f"reservation {held.id}: $0.2 still held for task "
                                          f"{task.id}, which ended accepted"]  # fmt: skip
        book.release(held)
        assert book.integrity_check() == []


def test_a_task_left_running_past_the_reservation_ttl_is_reported(ledger_url: str) -> None:
    clock = [T0]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        task = Task.create("extract", "x")
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        book.begin_task(
            task,
            make_decision("extract"),
            policy_revision=POLICY_REVISION,
            role="live",
            store_content=False,
        )
        assert book.integrity_check() == []  # running a moment ago: in flight, not lost
        clock[0] = T0 + timedelta(days=1)
        problems = book.integrity_check()
    assert problems == [
        f"task {task.id}: still running since 2026-11-02 09:00 UTC; the process that ran it "
        "stopped before recording its end"
    ]
    result = CliRunner().invoke(build_app(), ["ledger", "check", "-l", ledger_url])
    assert result.exit_code == 2 and task.id in result.output
