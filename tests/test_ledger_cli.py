"""`tierwise ledger tail|stats|check`: tables, JSON, one-line errors and exit codes."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.cli.ledger import parse_when
from tierwise.ledger import default_ledger_url, ledger_url, open_ledger
from tierwise.ledger.fixtures import record_task


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with open_ledger(path) as book:
        record_task(book, kind="extract", outcomes=["rejected", "accepted"], costs=["0.01", "0.2"])
        record_task(book, kind="extract", outcomes=["accepted"], costs=["0.01"])
        record_task(book, kind="classify", outcomes=["error", "accepted"], costs=["0", "0.05"])
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_tail_json_lists_the_latest_attempts(filled: Path) -> None:
    code, out, _ = invoke("ledger", "tail", "-n", "2", "--ledger", str(filled), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("classify", "error"),
        ("classify", "accepted"),
    ]
    assert rows[1]["cost_usd"] == "0.05"


def test_tail_table_shows_tiers_and_reasons(filled: Path) -> None:
    code, out, _ = invoke("ledger", "tail", "--ledger", str(filled), "--kind", "extract")
    assert code == 0
    assert "rejected" in out and "accepted" in out and "classify" not in out
    assert "json: not JSON" in out


def test_stats_json_counts_tasks_spend_and_escalation(filled: Path) -> None:
    code, out, _ = invoke("ledger", "stats", "--ledger", str(filled), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["tasks"] == 3 and data["attempts"] == 5
    assert Decimal(data["spend_usd"]) == Decimal("0.27")
    assert Decimal(data["wasted_usd"]) == Decimal("0.01")
    assert data["by_kind"]["extract"]["escalation_rate"] == 0.5
    cheap = next(r for r in data["by_kind_tier"] if (r["kind"], r["tier"]) == ("extract", "cheap"))
    assert (cheap["tasks"], cheap["escalated"]) == (2, 1)


def test_stats_table_has_a_row_per_kind_and_tier(filled: Path) -> None:
    code, out, _ = invoke("ledger", "stats", "--ledger", str(filled), "--kind", "extract")
    assert code == 0
    assert "extract" in out and "cheap" in out and "mid" in out and "classify" not in out
    assert "50.0%" in out and "$0.220000" in out


def test_stats_since_a_future_time_is_empty(filled: Path) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    code, _, err = invoke("ledger", "stats", "-l", str(filled), "--since", tomorrow)
    assert code == 0 and "no tasks" in err


def test_check_passes_a_sound_ledger_and_fails_a_broken_one(filled: Path) -> None:
    code, out, _ = invoke("ledger", "check", "--ledger", str(filled))
    assert code == 0 and "ledger OK" in out
    conn = sqlite3.connect(filled)
    conn.execute("UPDATE tasks SET cost_pusd = cost_pusd + 5000000")
    conn.commit()
    conn.close()
    code, out, err = invoke("ledger", "check", "--ledger", str(filled), "--json")
    assert code == 2
    report = json.loads(out)
    assert report["ok"] is False and len(report["problems"]) == 3
    assert err.strip().endswith("3 problem(s) found")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ledger", "tail", "--ledger", "{missing}"), "does not exist"),
        (("ledger", "stats", "--ledger", "{db}", "--since", "last tuesday"), "--since"),
        (("ledger", "stats", "--ledger", "{db}", "--role", "robots"), "--role"),
        (("ledger", "check", "--ledger", "sqlite:///:memory:"), "in-memory"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    filled: Path, args: tuple[str, ...], message: str
) -> None:
    values = {"missing": str(filled.parent / "nope.db"), "db": str(filled)}
    code, out, err = invoke(*(a.format(**values) for a in args))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (filled.parent / "nope.db").exists()


def test_the_default_ledger_comes_from_the_environment(
    filled: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIERWISE_LEDGER", str(filled))
    assert default_ledger_url() == ledger_url(filled)
    code, out, _ = invoke("ledger", "stats", "--json")
    assert code == 0 and json.loads(out)["tasks"] == 3
    monkeypatch.delenv("TIERWISE_LEDGER")
    monkeypatch.chdir(tmp_path)
    assert default_ledger_url() == "sqlite:///tierwise-ledger.db"


def test_release_stale_frees_budgets_held_by_dead_processes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    then = datetime.now(UTC) - timedelta(hours=3)
    with open_ledger(path, now=lambda: then) as book:
        book.reserve("dead", {"kind-day:x": Decimal(1)}, Decimal("0.9"))
    with open_ledger(path) as book:
        book.reserve("alive", {"kind-day:x": Decimal(1)}, Decimal("0.05"))
    code, out, _ = invoke(
        "ledger", "release-stale", "--older-than", "2h", "-l", str(path), "--json"
    )
    assert code == 0 and json.loads(out) == {"released": 1}
    with open_ledger(path) as book:
        assert book.spent("kind-day:x") == Decimal("0.05")
    code, _, err = invoke("ledger", "release-stale", "--older-than", "soon", "-l", str(path))
    assert code == 2 and "--older-than" in err


@pytest.mark.parametrize("command", ["tail", "stats", "check", "release-stale"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out, _ = invoke("ledger", command, "--help")
    assert code == 0 and "Example: tierwise ledger " + command in out
    assert "--ledger" in out


def test_parse_when_reads_ages_and_dates() -> None:
    now = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("90m", now=now) == now - timedelta(minutes=90)
    assert parse_when("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_when("2025-06-01T08:00+02:00") == datetime(2025, 6, 1, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected"):
        parse_when("soon")
