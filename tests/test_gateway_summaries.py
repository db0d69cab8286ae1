"""The gateway keeps the weekly report's hourly summary, so a report reads sums, not rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tierwise.demo import demo_tasks, run_demo
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.gateway.summaries import keep_once
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy
from tierwise.reports.weekly import weekly_report


def _ticking(start: datetime, step: timedelta) -> Callable[[], datetime]:
    at = [start]

    def now() -> datetime:
        at[0] += step
        return at[0]

    return now


def _past_traffic(db: Path) -> tuple[datetime, datetime]:
    """40 demo tasks spread over hours that have ended; the whole hours they cover."""
    now = datetime.now(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    run_demo(
        default_policy(),
        demo_tasks(40, seed=3),
        str(db),
        now=_ticking(first + timedelta(minutes=1), timedelta(minutes=2)),
    )
    return first, first + timedelta(hours=4)


def test_a_running_gateway_keeps_the_ended_hours_and_a_report_then_reads_them(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    since, until = _past_traffic(db)
    with open_ledger(db) as book:
        assert book.report_summary(since, until, keep=False).kept == ()  # nothing kept yet
        expected = weekly_report(book, default_policy(), since=since, until=until, keep=False)
    config = GatewayConfig(
        policy=default_policy(),
        ledger_url=str(db),
        allow_missing_keys=True,  # no upstream is asked here
        summary_every_s=0.2,
    )
    with GatewayServer(config), open_ledger(db) as book:
        deadline = time.monotonic() + 30
        while len(book.report_summary(since, until, keep=False).kept) < 4:
            assert time.monotonic() < deadline, "the gateway kept no summary"
            time.sleep(0.1)
    with open_ledger(db) as book:
        found = book.report_summary(since, until, keep=False)
        assert found.summarised == () and found.from_rows == ()  # read from kept sums only
        report = weekly_report(book, default_policy(), since=since, until=until, keep=False)
    kept, rows = report.as_dict(), expected.as_dict()
    assert kept.pop("source")["kept_hours"] == 4 and rows.pop("source")["kept_hours"] == 0
    assert kept == rows  # every figure from the kept sums is what the rows say


def test_keep_once_summarises_each_hour_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    since, _ = _past_traffic(db)
    now = since + timedelta(hours=6, minutes=3)
    with open_ledger(db) as book:
        assert keep_once(book, now) == 24  # the day before the last whole hour
        assert keep_once(book, now) == 0  # kept already: nothing to do


def test_summary_every_s_is_checked() -> None:
    with pytest.raises(ValueError, match="summary_every_s"):
        GatewayConfig(summary_every_s=-1)
    assert GatewayConfig.from_json(GatewayConfig(summary_every_s=0).to_json()).summary_every_s == 0
