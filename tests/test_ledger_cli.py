"""`tierwise ledger …`: tables, JSON, one-line errors and exit codes, on SQLite and Postgres."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.cli.ledger import parse_day, parse_when
from tierwise.ledger import HEAD_REVISION, default_ledger_url, ledger_url, open_ledger
from tierwise.ledger.fixtures import record_task

Raw = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def filled(ledger_url: str) -> str:
    path = ledger_url
    with open_ledger(path) as book:
        record_task(book, kind="extract", outcomes=["rejected", "accepted"], costs=["0.01", "0.2"])
        record_task(book, kind="extract", outcomes=["accepted"], costs=["0.01"])
        record_task(book, kind="classify", outcomes=["error", "accepted"], costs=["0", "0.05"])
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_tail_json_lists_the_latest_attempts(filled: str) -> None:
    code, out, _ = invoke("ledger", "tail", "-n", "2", "--ledger", str(filled), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("classify", "error"),
        ("classify", "accepted"),
    ]
    assert rows[1]["cost_usd"] == "0.05"


def test_tail_table_shows_tiers_and_reasons(filled: str) -> None:
    code, out, _ = invoke("ledger", "tail", "--ledger", str(filled), "--kind", "extract")
    assert code == 0
    assert "rejected" in out and "accepted" in out and "classify" not in out
    assert "json: not JSON" in out


def test_stats_json_counts_tasks_spend_and_escalation(filled: str) -> None:
    code, out, _ = invoke("ledger", "stats", "--ledger", str(filled), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["tasks"] == 3 and data["attempts"] == 5
    assert Decimal(data["spend_usd"]) == Decimal("0.27")
    assert Decimal(data["wasted_usd"]) == Decimal("0.01")
    assert data["by_kind"]["extract"]["escalation_rate"] == 0.5
    cheap = next(r for r in data["by_kind_tier"] if (r["kind"], r["tier"]) == ("extract", "cheap"))
    assert (cheap["tasks"], cheap["escalated"]) == (2, 1)


def test_stats_table_has_a_row_per_kind_and_tier(filled: str) -> None:
    code, out, _ = invoke("ledger", "stats", "--ledger", str(filled), "--kind", "extract")
    assert code == 0
    assert "extract" in out and "cheap" in out and "mid" in out and "classify" not in out
    assert "50.0%" in out and "$0.220000" in out


def test_stats_table_counts_tasks_that_failed_on_every_tier(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        record_task(book, kind="extract", outcomes=["rejected", "rejected", "rejected"])
        record_task(book, kind="extract", outcomes=["accepted"])
        record_task(book, kind="classify", outcomes=["accepted"])
    wide = CliRunner().invoke(
        build_app(), ["ledger", "stats", "--ledger", ledger_url], env={"COLUMNS": "160"}
    )
    code, out = wide.exit_code, wide.stdout
    assert code == 0
    header = next(line for line in out.splitlines() if "exhausted" in line)
    column = header.index("exhausted") + len("exhausted")  # right-aligned under its header

    def cell(line: str) -> str:
        return line[:column].split()[-1]

    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert cell(rows["extract"]) == "1" and cell(rows["classify"]) == "0"
    assert cell(rows["all"]) == "1"


def test_stats_since_a_future_time_is_empty(filled: str) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    code, _, err = invoke("ledger", "stats", "-l", str(filled), "--since", tomorrow)
    assert code == 0 and "no tasks" in err


def test_check_passes_a_sound_ledger_and_fails_a_broken_one(filled: str, raw_sql: Raw) -> None:
    code, out, _ = invoke("ledger", "check", "--ledger", str(filled))
    assert code == 0 and "ledger OK" in out
    raw_sql(filled, "UPDATE tasks SET cost_pusd = cost_pusd + 5000000")
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
        (("ledger", "prune", "--ledger", "{db}", "--before", "someday"), "--before"),
        (("ledger", "prune", "--ledger", "{db}", "--before", "2999-01-01"), "after today"),
        (("ledger", "daily", "--ledger", "{db}", "--since", "yesterday"), "--since"),
        (("ledger", "migrate", "--check", "--ledger", "{missing}"), "does not exist"),
        (
            ("ledger", "migrate", "--ledger", "postgresql+psycopg://u:pw@127.0.0.1:9/x"),
            "cannot open the ledger",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = tmp_path / "ledger.db"
    open_ledger(db).close()
    values = {"missing": str(tmp_path / "nope.db"), "db": str(db)}
    code, out, err = invoke(*(a.format(**values) for a in args))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "nope.db").exists()


def test_the_default_ledger_comes_from_the_environment(
    filled: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIERWISE_LEDGER", filled)
    assert default_ledger_url() == ledger_url(filled)
    code, out, _ = invoke("ledger", "stats", "--json")
    assert code == 0 and json.loads(out)["tasks"] == 3
    monkeypatch.delenv("TIERWISE_LEDGER")
    monkeypatch.chdir(tmp_path)
    assert default_ledger_url() == "sqlite:///tierwise-ledger.db"


def test_release_stale_frees_budgets_held_by_dead_processes(ledger_url: str) -> None:
    path = f"{ledger_url}?reservation_ttl=86400"  # not released at open: the command does it
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


@pytest.mark.parametrize(
    "command", ["tail", "stats", "daily", "check", "migrate", "prune", "release-stale", "export"]
)
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


def test_parse_day_reads_days_and_ages() -> None:
    now = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
    assert parse_day("2025-06-01") == date(2025, 6, 1)
    assert parse_day("90d", now=now) == date(2025, 3, 12)
    with pytest.raises(ValueError, match="UTC day"):
        parse_day("2025-06-01T10:00")


# -- migrate, prune, daily, held money -----------------------------------------------------------


def test_migrate_json_reports_what_it_did_and_check_exits_1_while_pending(
    ledger_url: str, downgrade: Callable[[str, str], None]
) -> None:
    code, out, _ = invoke("ledger", "migrate", "--ledger", ledger_url, "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["current"] == first["head"] == HEAD_REVISION
    assert first["applied"][-1] == HEAD_REVISION and first["up_to_date"]
    code, out, _ = invoke("ledger", "migrate", "--ledger", ledger_url, "--json")
    assert code == 0 and json.loads(out)["applied"] == []
    # back to the first revision: --check sees it pending and changes nothing
    downgrade(ledger_url, "0001")
    code, out, _ = invoke("ledger", "migrate", "--check", "--ledger", ledger_url)
    assert code == 1 and "pending" in out and HEAD_REVISION in out
    code, out, _ = invoke("ledger", "migrate", "--ledger", ledger_url)
    assert code == 0 and f"migrated to {HEAD_REVISION}" in out
    code, _, _ = invoke("ledger", "migrate", "--check", "--ledger", ledger_url)
    assert code == 0


def test_prune_deletes_old_tasks_and_daily_still_counts_them(ledger_url: str) -> None:
    old = datetime(2025, 1, 10, 9, tzinfo=UTC)
    with open_ledger(ledger_url, now=lambda: old) as book:
        for _ in range(3):
            record_task(book, outcomes=["rejected", "accepted"], costs=["0.01", "0.2"])
    with open_ledger(ledger_url) as book:
        record_task(book, outcomes=["accepted"], costs=["0.5"])
    code, before, _ = invoke("ledger", "daily", "--role", "all", "-l", ledger_url, "--json")
    assert code == 0
    code, out, _ = invoke(
        "ledger", "prune", "--before", "2025-02-01", "--dry-run", "-l", ledger_url
    )
    assert code == 0 and out.startswith("would prune 3 task(s) and 6 attempt(s)")
    code, out, _ = invoke(
        "ledger", "prune", "--before", "2025-02-01", "--batch-size", "2", "-l", ledger_url, "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert (result["tasks"], result["attempts"], result["days"]) == (3, 6, ["2025-01-10"])
    code, after, _ = invoke("ledger", "daily", "--role", "all", "-l", ledger_url, "--json")
    assert code == 0 and json.loads(after) == json.loads(before)
    code, out, _ = invoke("ledger", "stats", "-l", ledger_url, "--json")
    data = json.loads(out)
    assert data["tasks"] == 1 and data["pruned_before"] == "2025-01-11"
    code, out, _ = invoke("ledger", "stats", "-l", ledger_url)
    assert code == 0 and "were pruned" in out
    code, out, _ = invoke("ledger", "daily", "-l", ledger_url, "--since", "2025-01-01")
    assert code == 0 and "2025-01-10" in out and "$0.600000" in out  # 3 x 0.2 on mid
    code, _, _ = invoke("ledger", "check", "-l", ledger_url)
    assert code == 0


def test_stats_shows_money_held_by_open_reservations(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        record_task(book)
        book.reserve("t-1", {"kind-day:extract:x": Decimal(5)}, Decimal("0.25"))
        book.reserve("t-2", {"kind-day:extract:x": Decimal(5)}, Decimal("0.5"))
    code, out, _ = invoke("ledger", "stats", "-l", ledger_url, "--json")
    held = json.loads(out)["held"]
    assert (held["reservations"], held["held_usd"], held["expired"]) == (2, "0.75", 0)
    assert held["by_scope"][0]["scope"] == "kind-day:extract:x"
    code, out, _ = invoke("ledger", "stats", "-l", ledger_url)
    assert code == 0 and "held by 2 open reservation(s): $0.750000" in out


def test_keys_commands_work_on_either_backend(ledger_url: str) -> None:
    """`tierwise keys create|list|revoke` store and read keys in the same ledger."""
    code, out, err = invoke(
        "keys", "create", "--name", "ci", "--budget-usd-day", "2.5", "-l", ledger_url
    )
    assert code == 0, err
    secret = out.strip()
    code, out, _ = invoke("keys", "list", "--json", "-l", ledger_url)
    assert code == 0 and [k["name"] for k in json.loads(out)] == ["ci"]
    assert secret not in out
    with open_ledger(ledger_url) as book:
        key = book.verify_api_key(secret)
        assert key is not None and key.budget_usd_day == Decimal("2.5")
    assert invoke("keys", "revoke", "ci", "-l", ledger_url)[0] == 0
    assert json.loads(invoke("keys", "list", "--json", "-l", ledger_url)[1]) == []
