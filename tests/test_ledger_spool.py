"""Spool files, on SQLite and PostgreSQL: rows survive the round trip through JSON, a replay
writes them all and a second replay changes nothing, a line cut by a crash is ignored, a task
the ledger refuses is set aside without blocking the others, a running process's file is left
to it, and `tierwise ledger check` / `ledger replay` report and write what waits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.rows import Row
from tierwise.ledger.spool import Spool, ledger_identity, replay_orphans, scan
from tierwise.task import Task


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        yield book


def _task_rows(
    book: Ledger, *, cost: str = "0.002", scope: str = "key-day:k:2025-01-01"
) -> list[Row]:
    """One task's rows as the gateway builds them: start, a rejected and an accepted attempt,
    the end, and the settlement of the budget reservation made before the calls."""
    task = Task.create("extract", "Invoice 42 from ACME, total 10 EUR", session="s-1")
    held = book.reserve(task.id, {scope: Decimal("1")}, Decimal("0.01"))
    first = make_attempt(task, 0, outcome="rejected", cost_usd="0.0005")
    second = make_attempt(task, 1, tier_index=1, cost_usd=Decimal(cost) - Decimal("0.0005"))
    return [
        book.row_of_task(
            task,
            make_decision("extract"),
            policy_revision=POLICY_REVISION,
            role="live",
            store_content=False,
        ),
        book.row_of_attempt(first, store_content=False),
        book.row_of_attempt(second, store_content=False),
        book.row_of_finish(
            task.id,
            outcome="accepted",
            final_tier="mid",
            cost_usd=Decimal(cost),
            latency_s=0.4,
            attempts=2,
            output=second.output,
            store_content=False,
        ),
        book.row_of_closing(held, Decimal(cost)),
    ]


def _state(book: Ledger) -> tuple[Any, ...]:
    stats = book.stats()
    budget = book.budget("key-day:k:2025-01-01")
    with book.engine.connect() as conn:
        attempts = conn.exec_driver_sql(
            "SELECT task_id, attempt_no, cost_pusd, outcome FROM attempts ORDER BY 1, 2"
        ).all()
    return stats["tasks"], stats["spend_usd"], budget, [tuple(a) for a in attempts]


def test_rows_survive_the_round_trip_through_json(ledger: Ledger) -> None:
    rows = _task_rows(ledger)
    again = [Row.from_json(json.loads(json.dumps(r.to_json()))) for r in rows]
    assert again == rows
    with pytest.raises(ValueError, match="not a ledger row"):
        Row.from_json({"op": "drop", "task_id": "x", "values": {}})


def test_a_spooled_task_is_written_once_however_often_it_is_replayed(
    ledger: Ledger, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", ledger_identity(ledger))
    rows = [_task_rows(ledger), _task_rows(ledger, cost="0.003")]
    spool.append(rows)
    assert (spool.tasks, spool.rows) == (2, 10)
    assert ledger.stats()["tasks"] == 0  # nothing in the ledger yet; the budget is held
    assert ledger.budget("key-day:k:2025-01-01").held_usd == Decimal("0.02")  # type: ignore[union-attr]
    assert spool.path is not None
    copy = spool.path.read_bytes()

    result = spool.replay(ledger)
    assert (result.tasks, result.rows, result.rejected) == (2, 10, 0)
    assert spool.tasks == 0
    written = _state(ledger)
    tasks, spend, budget, attempts = written
    assert tasks == 2 and spend == Decimal("0.005") and len(attempts) == 4
    assert budget is not None and budget.held_usd == 0 and budget.spent_usd == Decimal("0.005")
    assert ledger.integrity_check() == []

    # A crash between the ledger's commit and the spool's truncation: the file is replayed again.
    spool.close()
    assert spool.path is not None and not spool.path.exists()  # empty, so deleted
    (tmp_path / "spool" / "left-over.jsonl").write_bytes(copy)
    again = replay_orphans(tmp_path / "spool", ledger)
    assert (again.tasks, again.rejected) == (2, 0)
    assert _state(ledger) == written
    assert ledger.integrity_check() == []
    assert scan(tmp_path / "spool") == []  # taken over and deleted


def test_a_line_cut_short_is_ignored_and_a_refused_task_is_set_aside(
    ledger: Ledger, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, ledger_identity(ledger))
    good = _task_rows(ledger)
    orphan = Task.create("extract", "no start row")
    refused = [ledger.row_of_attempt(make_attempt(orphan, 0), store_content=False)]  # no task
    spool.append([refused, good])
    assert spool.path is not None
    with spool.path.open("ab") as handle:  # a crash mid-append: never acknowledged
        handle.write(b'{"task_id": "cut", "rows": [{"op": "ta')
    spool.close()  # the owner goes away with rows still spooled: the file stays

    (left,) = scan(folder)
    assert (left.tasks, left.live) == (2, False)
    result = replay_orphans(folder, ledger)
    assert (result.tasks, result.rejected) == (1, 1)
    assert ledger.task(good[0].task_id) is not None
    assert ledger.task(orphan.id) is None
    (rejected,) = scan(folder)
    assert rejected.rejected and rejected.tasks == 1
    line = rejected.path.read_text().splitlines()[1]
    assert orphan.id in line and "error" in json.loads(line)


def test_a_running_process_keeps_its_file_and_other_ledgers_files_are_left_alone(
    ledger: Ledger, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    owner = Spool(folder, ledger_identity(ledger))
    owner.append([_task_rows(ledger)])
    stranger = Spool(folder, "sqlite:////elsewhere/other.db")
    stranger.append([_task_rows(ledger)])
    stranger.close()
    (mine, other) = sorted(scan(folder), key=lambda f: f.ledger != ledger_identity(ledger))
    assert mine.live and not other.live
    assert replay_orphans(folder, ledger).tasks == 0  # locked by its owner; another ledger's
    assert len(scan(folder)) == 2
    owner.close()  # the owner is gone now: the next process takes the file over
    assert replay_orphans(folder, ledger).tasks == 1
    assert [f.ledger for f in scan(folder)] == ["sqlite:////elsewhere/other.db"]


def test_ledger_check_reports_spooled_rows_and_ledger_replay_writes_them(
    ledger: Ledger, ledger_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, ledger_identity(ledger))
    rows = _task_rows(ledger)
    spool.append([rows])

    def run(*args: str) -> Any:
        return CliRunner().invoke(
            build_app(), [*args, "--ledger", ledger_url, "--spool-dir", str(folder)]
        )

    live = run("ledger", "check")
    assert live.exit_code == 2
    assert "1 task(s), 5 row(s) not in the ledger yet" in live.output
    assert "is running" in live.output
    # a running gateway's file is its own: replay leaves it
    skipped = run("ledger", "replay", "--json")
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["tasks"] == 0
    spool.close()
    gone = run("ledger", "check", "--json")
    assert gone.exit_code == 2
    report = json.loads(gone.stdout)
    assert report["ok"] is False and report["spool"][0]["live"] is False
    assert "tierwise ledger replay" in report["problems"][0]
    done = run("ledger", "replay")
    assert done.exit_code == 0, done.output
    assert "wrote 1 spooled task(s), 5 row(s)" in done.output
    assert ledger.task(rows[0].task_id) is not None
    clean = run("ledger", "check")
    assert clean.exit_code == 0, clean.output
